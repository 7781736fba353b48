import Logging
import PostgresNIO
import WorkerEngine
import WorkerHandlers

/// A pause or a limit may name a queue before its first job; it may also
/// name one by a typo. The note to print when the queue has no jobs and no
/// dead letters, else `nil`.
func unknownQueueNote(_ queue: String, client: PostgresClient, logger: Logger) async throws -> String? {
    let stats = try await QueueStats.read(client: client, queues: [queue], logger: logger)
    let known = stats.contains { $0.ready + $0.inFlight + $0.delayed + $0.blocked + $0.dead > 0 }
    return known ? nil : "note: queue '\(queue)' has no jobs and no dead letters yet; check the name"
}

/// A job of a kind this release's workerd has no handler for is dead-lettered
/// as invalid_event on its first claim. The note to print for such a kind,
/// else `nil`: a typo is caught before the job is lost to the dead letters.
func unknownKindNote(_ kind: String) -> String? {
    let kinds = HandlerRegistry.standard().kinds
    guard !kinds.contains(kind) else { return nil }
    return "note: this release's workerd has no handler for kind '\(kind)' (it has \(kinds.joined(separator: ", "))); "
        + "its jobs go to the dead letters as invalid_event unless your workers register it"
}
