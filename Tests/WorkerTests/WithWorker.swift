import Logging
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// Runs a worker for the duration of `body`, then stops it, waits for it
/// and returns its final counts.
@discardableResult
func withWorker(
    _ db: TestDatabase, _ handlers: HandlerRegistry, _ configuration: WorkerConfiguration, logger: Logger? = nil,
    _ body: (Worker) async throws -> Void
) async throws -> WorkerTotals {
    let worker = Worker(client: db.client, configuration: configuration, handlers: handlers, logger: logger ?? db.logger)
    let running = Task { try await worker.run() }
    do {
        try await body(worker)
    } catch {
        worker.stop()
        _ = try? await running.value
        throw error
    }
    worker.stop()
    try await running.value
    return worker.totals
}
