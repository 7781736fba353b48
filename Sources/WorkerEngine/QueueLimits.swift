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
        /// Jobs of the queue leased under the concurrency limit now (by the
        /// database's clock); nil without one.
        public var inFlight: Int?
        public var maxPerSecond: Double?
        public var burst: Int?
        /// The rate's bucket now: how many jobs a claim could take at once.
        public var tokens: Double?
        public var setAt: Date
        public var setBy: String
    }

    /// A token bucket: `perSecond` claims a second, up to `burst` at once.
    public struct Rate: Sendable, Equatable {
        /// The highest rate a queue may be given.
        public static let highest = 1_000_000.0
        public var perSecond: Double
        /// Nil: the burst the operator gave the rate before, else a second's
        /// worth (at least 1), which follows the rate when it changes.
        public var burst: Int?

        public init(perSecond: Double, burst: Int? = nil) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    /// Which limits `remove` takes away.
    public struct Selection: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let maxInFlight = Selection(rawValue: 1)
        public static let rate = Selection(rawValue: 2)
        public static let all: Selection = [.maxInFlight, .rate]
    }

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Sets or changes the limits given; a nil one stays as it was. A new
    /// rate starts with a full bucket; a rate changed keeps its bucket's
    /// level (no more than the new burst), so that setting the same limits
    /// again grants no burst. Wakes the queue's workers, for whom a higher
    /// limit may have freed slots. Returns the queue's limits as set.
    @discardableResult
    public func set(_ queue: String, maxInFlight: Int? = nil, rate: Rate? = nil) async throws -> Limit {
        precondition(maxInFlight != nil || rate != nil, "set needs a limit")
        let (perSecond, burst) = (rate?.perSecond, rate?.burst)
        let rows = try await client.query(
            """
            WITH limited AS (
                INSERT INTO worker.queue_limits AS l (queue, max_in_flight, max_per_second, burst, tokens, tokens_at)
                VALUES (\(queue), \(maxInFlight), \(perSecond), \(burst),
                        -- A new rate's bucket: full.
                        CASE WHEN \(perSecond)::float8 IS NOT NULL THEN coalesce(\(burst)::int, greatest(1, ceil(\(perSecond)::float8))) END,
                        CASE WHEN \(perSecond)::float8 IS NOT NULL THEN now() END)
                ON CONFLICT (queue) DO UPDATE SET
                    max_in_flight = coalesce(excluded.max_in_flight, l.max_in_flight),
                    max_per_second = coalesce(excluded.max_per_second, l.max_per_second),
                    burst = coalesce(excluded.burst, l.burst),
                    -- A rate changed keeps its level, no more than its new burst (which
                    -- excluded.tokens is when neither this nor the last call gave one).
                    tokens = CASE WHEN excluded.max_per_second IS NULL THEN l.tokens
                                  WHEN l.max_per_second IS NULL THEN excluded.tokens
                                  ELSE least(coalesce(excluded.burst, l.burst, excluded.tokens), worker.rate_tokens(l, now())) END,
                    tokens_at = coalesce(excluded.tokens_at, l.tokens_at),
                    set_at = now(), set_by = current_user
                RETURNING \(unescaped: Self.columns)
            )
            SELECT l.* FROM limited AS l CROSS JOIN LATERAL pg_notify('worker_jobs', l.queue)
            """, logger: logger)
        for try await limit in try await Self.limits(rows) { return limit }
        throw PostgresWorkerError.unexpected("limits set returned no row")
    }

    /// Takes the named limits away, and the queue's row with the last of
    /// them. Returns false when the queue had none of them. Wakes its workers.
    @discardableResult
    public func remove(_ queue: String, _ limits: Selection = .all) async throws -> Bool {
        let (inFlight, rate) = (limits.contains(.maxInFlight), limits.contains(.rate))
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
            "SELECT \(unescaped: Self.columns) FROM worker.queue_limits AS l ORDER BY l.queue", logger: logger)
        var limits: [Limit] = []
        for try await limit in try await Self.limits(rows) { limits.append(limit) }
        return limits
    }

    /// A `Limit` from the row `l` of `worker.queue_limits`, as `limits(_:)` decodes it.
    static let columns = """
        l.queue, l.max_in_flight,
        CASE WHEN l.max_in_flight IS NOT NULL THEN worker.limited_in_flight(l.queue, now()) END,
        l.max_per_second, worker.rate_burst(l), worker.rate_tokens(l, clock_timestamp()), l.set_at, l.set_by
        """

    static func limits(_ rows: PostgresRowSequence) async throws -> some AsyncSequence<Limit, any Error> {
        rows.decode((String, Int?, Int?, Double?, Int?, Double?, Date, String).self).map {
            Limit(queue: $0.0, maxInFlight: $0.1, inFlight: $0.2, maxPerSecond: $0.3, burst: $0.4, tokens: $0.5,
                  setAt: $0.6, setBy: $0.7)
        }
    }
}
