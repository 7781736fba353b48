import Foundation
import Logging
import PostgresNIO

/// A job in `worker.dead_letters`, as `workerctl dlq` shows it.
public struct DeadLetter: Sendable, Equatable, Encodable {
    public var id: Int64
    public var queue: String
    public var kind: String
    @JSONColumn public var payload: String
    public var idempotencyKey: String?
    public var attempts: Int
    public var redriveCount: Int
    public var reason: String
    public var lastError: String?
    /// The error history as JSON: one object per failed attempt.
    @JSONColumn public var errors: String
    public var createdAt: Date
    public var failedAt: Date
    public var failedBy: String?
}

/// Which dead letters an operation applies to; `nil` fields match everything.
public struct DeadLetterFilter: Sendable, Equatable {
    public var queue: String?
    public var kind: String?
    public var reason: String?
    public var ids: [Int64]?
    /// Dead-lettered at or after this time.
    public var since: Date?
    /// Dead-lettered before this time.
    public var until: Date?

    public init(
        queue: String? = nil, kind: String? = nil, reason: String? = nil, ids: [Int64]? = nil,
        since: Date? = nil, until: Date? = nil
    ) {
        self.queue = queue
        self.kind = kind
        self.reason = reason
        self.ids = ids
        self.since = since
        self.until = until
    }
}

/// A dead letter put back on the queue (or that would be, in a dry run).
public struct RedrivenJob: Sendable, Equatable, Codable {
    public var id: Int64
    public var queue: String
    public var kind: String
    public var reason: String
    public var redriveCount: Int

    public init(id: Int64, queue: String, kind: String, reason: String, redriveCount: Int) {
        self.id = id
        self.queue = queue
        self.kind = kind
        self.reason = reason
        self.redriveCount = redriveCount
    }
}

/// Reading, redriving and purging `worker.dead_letters`.
public struct DeadLetterQueue: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func list(_ filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter] {
        let rows = try await client.query(
            """
            SELECT id, queue, kind, payload::text, idempotency_key, attempts, redrive_count, reason, last_error,
                   errors::text, created_at, failed_at, failed_by
            FROM worker.dead_letters WHERE \(filter)
            ORDER BY failed_at DESC, id DESC LIMIT \(limit)
            """,
            logger: logger)
        var letters: [DeadLetter] = []
        for try await r in rows.decode(
            (Int64, String, String, String, String?, Int, Int, String, String?, String, Date, Date, String?).self)
        {
            letters.append(DeadLetter(
                id: r.0, queue: r.1, kind: r.2, payload: r.3, idempotencyKey: r.4, attempts: r.5, redriveCount: r.6,
                reason: r.7, lastError: r.8, errors: r.9, createdAt: r.10, failedAt: r.11, failedBy: r.12))
        }
        return letters
    }

    public func show(id: Int64) async throws -> DeadLetter? {
        try await list(DeadLetterFilter(ids: [id]), limit: 1).first
    }

    /// Moves up to `limit` matching dead letters back to the queue in one
    /// statement: each leaves the dead-letter table and enters `jobs` under its
    /// old id with attempts reset and `redrive_count + 1`, its error history
    /// kept and the dead-lettering added to it (a reason with no error text,
    /// such as attempts lost to crashes, would otherwise leave no trace). Rows
    /// another redrive is moving are skipped, so concurrent redrives never put
    /// a job back twice. With `dryRun`, returns what would move and changes nothing.
    public func redrive(_ filter: DeadLetterFilter, limit: Int, dryRun: Bool = false) async throws -> [RedrivenJob] {
        let query: PostgresQuery = dryRun
            ? "SELECT id, queue, kind, reason, redrive_count + 1 FROM worker.dead_letters WHERE \(filter) ORDER BY id LIMIT \(limit)"
            : """
            WITH picked AS (
                SELECT id FROM worker.dead_letters WHERE \(filter) ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), moved AS (
                DELETE FROM worker.dead_letters AS d USING picked WHERE d.id = picked.id RETURNING d.*
            ), inserted AS (
                INSERT INTO worker.jobs (id, queue, kind, payload, idempotency_key, priority, attempts,
                                         max_attempts, visible_at, created_at, last_error, errors, redrive_count,
                                         ordering_key)
                OVERRIDING SYSTEM VALUE
                SELECT id, queue, kind, payload, idempotency_key, priority, 0,
                       max_attempts, now(), now(), last_error,
                       errors || jsonb_build_array(jsonb_build_object(
                           'attempt', attempts, 'at', failed_at, 'dead_lettered', reason, 'worker', failed_by,
                           'redriven_at', now())),
                       redrive_count + 1, ordering_key
                FROM moved
                ORDER BY id
                RETURNING id, redrive_count
            )
            SELECT i.id, m.queue, m.kind, m.reason, i.redrive_count
            FROM inserted AS i JOIN moved AS m ON m.id = i.id
            ORDER BY i.id
            """
        var jobs: [RedrivenJob] = []
        for try await r in try await client.query(query, logger: logger).decode((Int64, String, String, String, Int).self) {
            jobs.append(RedrivenJob(id: r.0, queue: r.1, kind: r.2, reason: r.3, redriveCount: r.4))
        }
        return jobs
    }

    /// Deletes up to `limit` matching dead letters for good in one statement
    /// and returns how many; rows a redrive is moving are skipped. With
    /// `dryRun`, counts what would go and changes nothing.
    public func purge(_ filter: DeadLetterFilter, limit: Int, dryRun: Bool = false) async throws -> Int {
        let query: PostgresQuery = dryRun
            ? "SELECT count(*)::int FROM (SELECT FROM worker.dead_letters WHERE \(filter) ORDER BY id LIMIT \(limit)) AS m"
            : """
            WITH picked AS (
                SELECT id FROM worker.dead_letters WHERE \(filter) ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM worker.dead_letters AS d USING picked WHERE d.id = picked.id RETURNING 1
            )
            SELECT count(*)::int FROM gone
            """
        for try await count in try await client.query(query, logger: logger).decode(Int.self) { return count }
        return 0
    }
}

extension PostgresQuery.StringInterpolation {
    /// `filter` as a WHERE condition, its values bound as parameters.
    mutating func appendInterpolation(_ filter: DeadLetterFilter) {
        appendCondition(filter.queue, as: "text", "queue = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.kind, as: "text", "kind = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.reason, as: "text", "reason = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.ids, as: "bigint[]", "id = ANY(", ")")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.since, as: "timestamptz", "failed_at >= ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.until, as: "timestamptz", "failed_at < ")
    }
}
