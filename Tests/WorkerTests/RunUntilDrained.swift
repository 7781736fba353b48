import WorkerRuntime
import WorkerTestSupport

/// Runs `workers` side by side until `db`'s queue is empty, then stops them
/// and waits for each to finish.
func runUntilDrained(_ workers: [Worker], _ db: TestDatabase, _ what: String) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in workers { group.addTask { try await worker.run() } }
        try await eventually(what) { try await db.jobCount() == 0 }
        workers.forEach { $0.stop() }
        try await group.waitForAll()
    }
}
