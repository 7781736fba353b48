import Foundation
import Logging
import PostgresNIO

/// Fleet-wide limits per queue (`worker.queue_limits`, sql/021 and sql/022):
/// the claim of a limited queue takes no more jobs than its limits leave,
/// counting the live leases of every worker (`maxInFlight`) and the jobs
/// claimed per second (`rate`). What `workerd --queue-concurrency` is to
/// one process, this is to the fleet.
public struct QueueLimits: Sendable {
    public struct Limit: Sendable, Equatable, Codable {
        public var queue: String
        public var maxInFlight: Int?
        /// Jobs of the queue leased under the concurrency limit now (by the database's clock).
        public var inFlight: Int
        public var maxPerSecond: Double?
        public var burst: Int?
        /// The rate's bucket now: how many jobs a claim could take at once.
        public var tokens: Double?
        public var setAt: Date
        public var setBy: String
    }

    /// A token bucket: `perSecond` claims a second, up to `burst` at once.
    public struct Rate: Sendable, Equatable {
        public static let maxPerSecond = 1_000_000.0
        public var perSecond: Double
        public var burst: Int

        /// Without a burst, a second's worth (at least one job).
        public init(perSecond: Double, burst: Int? = nil) {
            self.perSecond = perSecond
            self.burst = burst ?? (perSecond.isFinite ? max(1, Int(min(perSecond, Self.maxPerSecond).rounded(.up))) : 1)
        }
    }

    /// Which limits `remove` takes away.
    public struct Kinds: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let maxInFlight = Kinds(rawValue: 1)
        public static let rate = Kinds(rawValue: 2)
        public static let all: Kinds = [.maxInFlight, .rate]
    }

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Sets or changes the limits given; a nil one stays as it was. A rate
    /// set starts with a full bucket. Wakes the queue's workers, for whom a
    /// higher limit may have freed slots.
    public func set(_ queue: String, maxInFlight: Int? = nil, rate: Rate? = nil) async throws {
        precondition(maxInFlight != nil || rate != nil, "set needs a limit")
        let (perSecond, burst) = (rate?.perSecond, rate?.burst)
        try await client.query(
            """
            WITH limited AS (
                INSERT INTO worker.queue_limits AS l (queue, max_in_flight, max_per_second, burst, tokens, tokens_at)
                VALUES (\(queue), \(maxInFlight), \(perSecond), \(burst), \(burst)::float8,
                        CASE WHEN \(perSecond)::float8 IS NOT NULL THEN now() END)
                ON CONFLICT (queue) DO UPDATE SET
                    max_in_flight = coalesce(excluded.max_in_flight, l.max_in_flight),
                    max_per_second = coalesce(excluded.max_per_second, l.max_per_second),
                    burst = coalesce(excluded.burst, l.burst),
                    tokens = coalesce(excluded.tokens, l.tokens),
                    tokens_at = coalesce(excluded.tokens_at, l.tokens_at),
                    set_at = now(), set_by = current_user
                RETURNING queue
            )
            SELECT pg_notify('worker_jobs', queue) FROM limited
            """, logger: logger).drain()
    }

    /// Takes the named limits away, and the queue's row with the last of
    /// them. Returns false when the queue had none of them. Wakes its workers.
    @discardableResult
    public func remove(_ queue: String, _ kinds: Kinds = .all) async throws -> Bool {
        let (inFlight, rate) = (kinds.contains(.maxInFlight), kinds.contains(.rate))
        return try await client.query(
            """
            WITH target AS (
                SELECT queue, (\(inFlight) OR max_in_flight IS NULL) AND (\(rate) OR max_per_second IS NULL) AS emptied
                FROM worker.queue_limits
                WHERE queue = \(queue) AND ((\(inFlight) AND max_in_flight IS NOT NULL) OR (\(rate) AND max_per_second IS NOT NULL))
                FOR UPDATE
            ), deleted AS (
                DELETE FROM worker.queue_limits AS l USING target AS t WHERE l.queue = t.queue AND t.emptied
                RETURNING l.queue
            ), changed AS (
                UPDATE worker.queue_limits AS l
                SET max_in_flight = CASE WHEN \(inFlight) THEN NULL ELSE l.max_in_flight END,
                    max_per_second = CASE WHEN \(rate) THEN NULL ELSE l.max_per_second END,
                    burst = CASE WHEN \(rate) THEN NULL ELSE l.burst END,
                    tokens = CASE WHEN \(rate) THEN NULL ELSE l.tokens END,
                    tokens_at = CASE WHEN \(rate) THEN NULL ELSE l.tokens_at END,
                    set_at = now(), set_by = current_user
                FROM target AS t WHERE l.queue = t.queue AND NOT t.emptied
                RETURNING l.queue
            )
            SELECT queue, pg_notify('worker_jobs', queue) FROM (SELECT queue FROM deleted UNION ALL SELECT queue FROM changed) AS r
            """, logger: logger).hasRows()
    }

    public func list() async throws -> [Limit] {
        let rows = try await client.query(
            """
            SELECT l.queue, l.max_in_flight, worker.limited_in_flight(l.queue, now()), l.max_per_second, l.burst,
                   least(l.burst, l.tokens + l.max_per_second * greatest(extract(epoch FROM clock_timestamp() - l.tokens_at), 0)),
                   l.set_at, l.set_by
            FROM worker.queue_limits AS l ORDER BY l.queue
            """, logger: logger)
        var limits: [Limit] = []
        for try await r in rows.decode((String, Int?, Int, Double?, Int?, Double?, Date, String).self) {
            limits.append(Limit(queue: r.0, maxInFlight: r.1, inFlight: r.2, maxPerSecond: r.3, burst: r.4, tokens: r.5,
                                setAt: r.6, setBy: r.7))
        }
        return limits
    }
}
