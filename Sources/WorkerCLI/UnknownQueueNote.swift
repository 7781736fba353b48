import Logging
import PostgresNIO
import WorkerEngine

/// A pause or a limit may name a queue before its first job; it may also
/// name one by a typo. The note to print when the queue has no jobs and no
/// dead letters, else `nil`.
func unknownQueueNote(_ queue: String, client: PostgresClient, logger: Logger) async throws -> String? {
    let stats = try await QueueStats.read(client: client, queues: [queue], logger: logger)
    let known = stats.contains { $0.ready + $0.inFlight + $0.delayed + $0.blocked + $0.dead > 0 }
    return known ? nil : "note: queue '\(queue)' has no jobs and no dead letters yet; check the name"
}
