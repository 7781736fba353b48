import Foundation
import Logging
import PostgresNIO

/// Fleet-wide concurrency limits (`worker.queue_limits`, sql/021): the claim
/// of a limited queue takes no more jobs than its limit leaves, counting the
/// live leases of every worker. What `workerd --queue-concurrency` is to one
/// process, this is to the fleet.
public struct QueueLimits: Sendable {
    public struct Limit: Sendable, Equatable, Codable {
        public var queue: String
        public var maxInFlight: Int
        /// Jobs of the queue leased under the limit now (by the database's clock).
        public var inFlight: Int
        public var setAt: Date
        public var setBy: String
    }

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Sets or changes the queue's limit; wakes its workers, for whom a
    /// higher limit may have freed slots.
    public func set(_ queue: String, maxInFlight: Int) async throws {
        try await client.query(
            """
            WITH limited AS (
                INSERT INTO worker.queue_limits (queue, max_in_flight) VALUES (\(queue), \(maxInFlight))
                ON CONFLICT (queue) DO UPDATE SET max_in_flight = excluded.max_in_flight, set_at = now(), set_by = current_user
                RETURNING queue
            )
            SELECT pg_notify('worker_jobs', queue) FROM limited
            """, logger: logger).drain()
    }

    /// Returns false when the queue had no limit. Wakes its workers.
    @discardableResult
    public func remove(_ queue: String) async throws -> Bool {
        try await client.query(
            """
            WITH removed AS (DELETE FROM worker.queue_limits WHERE queue = \(queue) RETURNING queue)
            SELECT queue, pg_notify('worker_jobs', queue) FROM removed
            """, logger: logger).hasRows()
    }

    public func list() async throws -> [Limit] {
        let rows = try await client.query(
            """
            SELECT l.queue, l.max_in_flight, worker.limited_in_flight(l.queue, now()), l.set_at, l.set_by
            FROM worker.queue_limits AS l ORDER BY l.queue
            """, logger: logger)
        var limits: [Limit] = []
        for try await (queue, max, inFlight, at, by) in rows.decode((String, Int, Int, Date, String).self) {
            limits.append(Limit(queue: queue, maxInFlight: max, inFlight: inFlight, setAt: at, setBy: by))
        }
        return limits
    }
}
