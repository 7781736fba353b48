import Logging
import Metrics
import WorkerEngine

/// Keeps the leases of long batches alive: every heartbeat interval it pushes
/// `visible_at` of every held lease one visibility timeout ahead. If the worker
/// hangs or dies, the beats stop and the jobs come back to the fleet.
struct LeaseHeartbeat: Sendable {
    let queue: JobQueue
    let leases: LeaseRegistry
    let contact: DatabaseContact
    let sessions: BatchSessions
    let configuration: WorkerConfiguration
    let logger: Logger

    func run() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.heartbeatInterval)
                let held = leases.all
                guard !held.isEmpty else { continue }
                let (queue, timeout) = (queue, configuration.visibilityTimeout)
                let checked = sessions.pids
                let (extended, live) = try await withDeadline(in: configuration.statementDeadline, orElse: {
                    DeadlineExceeded(operation: "lease heartbeat", reason: "no answer from the database in time for the leases to be of use")
                }) {
                    try await queue.beat(extending: held, visibilityTimeout: timeout, checking: checked)
                }
                contact.heard()
                for pid in sessions.found(live, among: checked) {
                    logger.warning("the database dropped the session of a batch; the batch is abandoned", metadata: ["pid": "\(pid)"])
                }
                logger.trace("leases extended", metadata: ["held": "\(held.count)", "extended": "\(extended.count)"])
            } catch is CancellationError {
                return
            } catch {
                Counter(label: JobMetrics.heartbeatFailures).increment()
                logger.warning("lease heartbeat failed", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }
}
