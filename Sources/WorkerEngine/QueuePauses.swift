import Foundation
import Logging
import PostgresNIO

/// Pausing and resuming queues for the whole fleet. The claim skips a queue
/// with a row in `worker.queue_pauses`, so a pause takes effect at every
/// worker's next claim, with no message to deliver and none to lose.
public struct QueuePauses: Sendable {
    public struct Pause: Sendable, Equatable, Codable {
        public var queue: String
        public var pausedAt: Date
        public var pausedBy: String
        public var reason: String?
    }

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Returns false when the queue was paused already (the first pause and its reason stay).
    @discardableResult
    public func pause(_ queue: String, reason: String? = nil) async throws -> Bool {
        try await client.query(
            """
            INSERT INTO worker.queue_pauses (queue, reason) VALUES (\(queue), \(reason))
            ON CONFLICT (queue) DO NOTHING
            RETURNING queue
            """, logger: logger).hasRows()
    }

    /// Returns false when the queue was not paused. Wakes the workers of the
    /// queue at once, as an insert would, instead of at their next poll.
    @discardableResult
    public func resume(_ queue: String) async throws -> Bool {
        try await client.query(
            """
            WITH resumed AS (DELETE FROM worker.queue_pauses WHERE queue = \(queue) RETURNING queue)
            SELECT queue, pg_notify('worker_jobs', queue) FROM resumed
            """, logger: logger).hasRows()
    }

    public func list() async throws -> [Pause] {
        let rows = try await client.query(
            "SELECT queue, paused_at, paused_by, reason FROM worker.queue_pauses ORDER BY queue", logger: logger)
        var pauses: [Pause] = []
        for try await (queue, at, by, reason) in rows.decode((String, Date, String, String?).self) {
            pauses.append(Pause(queue: queue, pausedAt: at, pausedBy: by, reason: reason))
        }
        return pauses
    }
}
