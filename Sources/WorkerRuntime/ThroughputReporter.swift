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
    let logger: Logger

    func run() async {
        while (try? await Task.sleep(for: interval)) != nil {
            await flush()
        }
    }

    func flush() async {
        let tallies = counters.takeTallies()
        do {
            try await throughput.record(tallies, workerID: workerID)
        } catch {
            counters.restore(tallies)
            logger.warning("could not record throughput; will retry", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
