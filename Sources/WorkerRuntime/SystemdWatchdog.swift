import Foundation
import Logging
import WorkerEngine

/// Keeps systemd informed while the worker runs: `WATCHDOG=1` at half the
/// watchdog timeout as long as no lane's claim has been stuck for a whole
/// timeout (then it stays silent, and systemd restarts the process), and a
/// `STATUS=` line with the throughput since the last one.
public struct SystemdWatchdog: Sendable {
    let notifier: SystemdNotifier
    let worker: Worker
    let logger: Logger

    public init(notifier: SystemdNotifier, worker: Worker, logger: Logger) {
        self.notifier = notifier
        self.worker = worker
        self.logger = logger
    }

    public func run() async {
        let timeout = notifier.watchdogTimeout
        let interval = timeout.map { $0 / 2 } ?? .seconds(10)
        var last = (totals: worker.totals, at: ContinuousClock.now)
        var silent = false
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: interval)) != nil else { return }
            if let timeout {
                let stuck = worker.stuckLanes(after: timeout)
                if stuck.isEmpty {
                    notifier.send("WATCHDOG=1")
                    if silent { logger.notice("claim loop moving again; watchdog resumed") }
                    silent = false
                } else if !silent {
                    logger.error("claim loop stuck; withholding the systemd watchdog", metadata: ["lanes": "\(stuck)"])
                    silent = true
                }
            }
            let now = (totals: worker.totals, at: ContinuousClock.now)
            let finished = now.totals.finished - last.totals.finished
            let rate = Double(finished) / max((now.at - last.at).seconds, 0.001)
            notifier.send(
                "STATUS=\(String(format: "%.1f", rate)) jobs/s; done \(now.totals.done), retried \(now.totals.retried), "
                    + "dead-lettered \(now.totals.deadLettered), duplicates \(now.totals.duplicates)")
            last = now
        }
    }
}
