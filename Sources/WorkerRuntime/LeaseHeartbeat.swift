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
    let configuration: WorkerConfiguration
    let logger: Logger

    func run() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.heartbeatInterval)
                let held = leases.all
                guard !held.isEmpty else { continue }
                let (queue, timeout, silence) = (queue, configuration.visibilityTimeout, configuration.silenceTimeout)
                let started = ContinuousClock.now
                let extended = try await withDeadline({ started + silence }, orElse: {
                    DeadlineExceeded(operation: "lease heartbeat", reason: "no answer from the database within the silence timeout")
                }) {
                    try await queue.extend(held, visibilityTimeout: timeout)
                }
                contact.heard()
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
