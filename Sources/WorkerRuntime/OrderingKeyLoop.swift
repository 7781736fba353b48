import Logging
import WorkerEngine

/// Hands ordering keys over whose heads left the queue while their lock was
/// taken (`OrderingKeys`), every `interval` while the worker runs: such a
/// key's next job waits at most that long. Every worker of the fleet looks;
/// each note is settled by one of them.
struct OrderingKeyLoop: Sendable {
    let keys: OrderingKeys
    let interval: Duration
    /// How long a look may wait for the database (see `ThroughputReporter`).
    let deadline: Duration
    let logger: Logger

    func run() async {
        repeat {
            do {
                let keys = keys
                let settled = try await withDeadline(in: deadline, for: "ordering keys") { try await keys.release() }
                if settled > 0 { logger.debug("ordering keys handed over", metadata: ["keys": "\(settled)"]) }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("could not hand ordering keys over; will retry", metadata: ["error": "\(String(reflecting: error))"])
            }
        } while (try? await Task.sleep(for: interval)) != nil
    }
}
