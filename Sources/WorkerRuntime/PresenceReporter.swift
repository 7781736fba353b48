import Foundation
import Logging
import WorkerEngine

/// Keeps this worker's row in `worker.workers` for `workerctl workers`:
/// written at start and every `interval` with the leases held and whether a
/// stop has begun, and deleted once the worker has stopped. A write that
/// fails is only logged: the fleet's view must never hold up its work.
struct PresenceReporter: Sendable {
    let registry: WorkerRegistry
    let interval: Duration
    /// How long a write may wait for its answer (see `ThroughputReporter`).
    let deadline: Duration
    let logger: Logger
    let report: @Sendable () -> WorkerReport

    /// Reports until cancelled, and at once when `stop` closes: a stopping
    /// worker is shown as such while it finishes its jobs.
    func run(reportingAtOnce stop: WakeSignal) async {
        var stopReported = false
        while !Task.isCancelled {
            await write()
            if stopReported {
                guard (try? await Task.sleep(for: interval)) != nil else { return }
            } else {
                stopReported = report().stopping
                await stop.wait(since: 0, upTo: interval)
            }
        }
    }

    func write() async {
        let report = report()
        do {
            let other = try await withDeadline(in: deadline, for: "worker report") { try await registry.report(report) }
            if let other, Self.isAlive(other, besides: report) {
                logger.warning(
                    "another workerd reports under this worker id; give each its own --worker-id",
                    metadata: ["other": "\(other)"])
            }
        } catch is CancellationError {
            return  // the worker stops; its row is removed after
        } catch {
            logger.warning("could not report this worker; will retry", metadata: ["error": "\(String(reflecting: error))"])
        }
    }

    /// Deletes the row; a worker that could not is shown as gone once its
    /// last report is old.
    func remove() async {
        let (registry, report) = (registry, report())
        do {
            try await withDeadline(in: deadline, for: "worker removal") {
                try await registry.remove(workerID: report.workerID, instance: report.instance)
            }
        } catch {
            logger.warning("could not remove this worker's row", metadata: ["error": "\(String(reflecting: error))"])
        }
    }

    /// Whether `other` may still run. On this host the kernel knows: a
    /// process restarted by systemd under its predecessor's id finds the
    /// predecessor's fresh row, and that is no clash; nor is a predecessor
    /// with this process's own pid (a restarted container's pid 1).
    static func isAlive(_ other: WorkerRegistry.Process, besides report: WorkerReport) -> Bool {
        guard other.host == report.host else { return true }
        guard other.pid != report.pid, let pid = Int32(exactly: other.pid), pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// This host's name, from the kernel: `ProcessInfo.hostName` may ask DNS.
    static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()
}
