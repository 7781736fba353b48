import Logging
import WorkerEngine

/// Sweeps expired idempotency keys every `interval` while the worker runs.
/// The first sweep waits one interval, so a fleet restarting together does not
/// sweep at once (and the advisory lock lets only one of them do it anyway).
struct IdempotencySweepLoop: Sendable {
    let sweeper: IdempotencySweeper
    let interval: Duration
    let logger: Logger

    func run() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                _ = try await sweeper.sweep()
            } catch is CancellationError {
                return
            } catch {
                logger.warning("idempotency key sweep failed", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }
}
