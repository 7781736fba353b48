import Logging
import WorkerEngine

/// Writes what the worker finished to `worker.throughput` every `interval`,
/// and once more when the worker stops, so that `workerctl stats` can show
/// the fleet's throughput without a metrics system.
struct ThroughputReporter: Sendable {
    let throughput: Throughput
    let counters: WorkerCounters
    let workerID: String
    let interval: Duration
    /// How long a write may wait for its answer. The last write runs after the
    /// lanes stopped, and nothing cancels it: over a connection whose link went
    /// dead it would hold up the worker's stop for TCP's quarter of an hour.
    let deadline: Duration
    let logger: Logger

    func run() async {
        while (try? await Task.sleep(for: interval)) != nil {
            await uncancelled { await flush() }
        }
    }

    func flush() async {
        let tallies = counters.takeTallies()
        let (throughput, workerID) = (throughput, workerID)
        do {
            try await withDeadline(in: deadline, for: "throughput record") {
                try await throughput.record(tallies, workerID: workerID)
            }
        } catch {
            counters.restore(tallies)
            logger.warning("could not record throughput; will retry", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
