import Foundation
import Logging
import PostgresNIO

/// Where a job in `worker.jobs` stands, in `workerctl stats`' words.
public enum JobState: String, Sendable, Codable, CaseIterable {
    /// Claimable now: new, due for its retry, or its lease expired.
    case ready
    /// Leased by a worker whose lease has not expired.
    case inFlight = "in_flight"
    /// Waiting for its retry's backoff or its `run_at`.
    case delayed
    /// Waiting for an earlier job of its ordering key to leave the queue.
    case blocked
}

/// A job in `worker.jobs`, as `workerctl jobs` shows it.
public struct QueuedJob: Sendable, Equatable, Encodable {
    public var id: Int64
    public var queue: String
    public var kind: String
    public var state: JobState
    @JSONColumn public var payload: String
    public var idempotencyKey: String?
    /// Jobs of its queue with this key run one at a time, in id order.
    public var orderingKey: String?
    /// Held while it waits (sql/023): a producer's call with the key changes this job.
    public var jobKey: String?
    public var priority: Int
    public var attempts: Int
    public var maxAttempts: Int?
    /// When it becomes claimable: its lease's expiry while in flight; blocked,
    /// its own run time, once it is its key's turn.
    public var visibleAt: Date
    /// The worker of its lease: in flight, the one holding it; ready, the one
    /// whose lease expired (crashed or stalled).
    public var leasedBy: String?
    /// When that lease was taken: in flight, how long its attempt has run.
    public var leasedAt: Date?
    public var createdAt: Date
    public var lastError: String?
    /// The error history as JSON: one object per failed attempt.
    @JSONColumn public var errors: String
    public var redriveCount: Int
}

/// A job `QueuedJobs.cancel` moved to the dead letters.
public struct CancelledJob: Sendable, Equatable {
    public var id: Int64
    /// A worker held its lease: its handler may be running (without a
    /// transaction, which would have kept the job from being moved).
    public var wasLeased: Bool

    public init(id: Int64, wasLeased: Bool) {
        self.id = id
        self.wasLeased = wasLeased
    }
}

/// Which jobs an operation applies to; `nil` fields match everything.
public struct JobFilter: Sendable, Equatable {
    public var queue: String?
    public var kind: String?
    public var state: JobState?
    public var ids: [Int64]?
    /// Only jobs enqueued (or redriven) at or before this time: see `DatabaseClock`.
    public var enqueuedBy: Date?
    /// Only jobs with greater ids: the cursor of an operation in batches, so
    /// that a job it changed is not taken again by a later batch.
    public var afterID: Int64?

    public init(
        queue: String? = nil, kind: String? = nil, state: JobState? = nil, ids: [Int64]? = nil,
        enqueuedBy: Date? = nil, afterID: Int64? = nil
    ) {
        self.queue = queue
        self.kind = kind
        self.state = state
        self.ids = ids
        self.enqueuedBy = enqueuedBy
        self.afterID = afterID
    }
}

/// The operator's view of `worker.jobs`: list and show jobs, cancel them
/// into the dead-letter table, make delayed ones ready now.
public struct QueuedJobs: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Matching jobs by queue, priority and due time: the claim index's order.
    public func list(_ filter: JobFilter, limit: Int) async throws -> [QueuedJob] {
        let rows = try await client.query(
            """
            SELECT id, queue, kind, \(unescaped: JobFilter.stateSQL), payload::text, idempotency_key, ordering_key, job_key, priority,
                   attempts, max_attempts, coalesce(parked_visible_at, visible_at), leased_by, leased_at, created_at,
                   last_error, errors::text, redrive_count
            FROM worker.jobs WHERE \(filter)
            ORDER BY queue, priority, visible_at, id LIMIT \(limit)
            """,
            logger: logger)
        var jobs: [QueuedJob] = []
        for try await r in rows.decode(
            (Int64, String, String, String, String, String?, String?, String?, Int16, Int, Int?, Date, String?, Date?, Date,
             String?, String, Int).self)
        {
            guard let state = JobState(rawValue: r.3) else { throw PostgresWorkerError.unexpected("job state '\(r.3)'") }
            jobs.append(QueuedJob(
                id: r.0, queue: r.1, kind: r.2, state: state, payload: r.4, idempotencyKey: r.5, orderingKey: r.6,
                jobKey: r.7, priority: Int(r.8), attempts: r.9, maxAttempts: r.10, visibleAt: r.11, leasedBy: r.12,
                leasedAt: r.13, createdAt: r.14, lastError: r.15, errors: r.16, redriveCount: r.17))
        }
        return jobs
    }

    public func show(id: Int64) async throws -> QueuedJob? {
        try await list(JobFilter(ids: [id]), limit: 1).first
    }

    /// Moves up to `limit` matching jobs to the dead-letter table as
    /// `cancelled`, with `note` (who and why) as their last error, in one
    /// statement; returns them. A job inside a worker's processing
    /// transaction (its row locked) is skipped: `cancelRunning` asks its
    /// worker to stop it. A job leased by a worker that has not locked it yet
    /// is cancelled, and its lease with it: like a zombie, that worker finds
    /// no row to lock or ack, and nothing of it commits. With `dryRun`,
    /// returns what would go and changes nothing (locked jobs included).
    public func cancel(_ filter: JobFilter, limit: Int, note: String, dryRun: Bool = false) async throws -> [CancelledJob] {
        let query: PostgresQuery = dryRun
            ? "SELECT id, false FROM worker.jobs WHERE \(filter) ORDER BY id LIMIT \(limit)"
            : """
            WITH picked AS (
                SELECT id FROM worker.jobs WHERE \(filter) ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), moved AS (
                DELETE FROM worker.jobs AS j USING picked WHERE j.id = picked.id RETURNING j.*
            ), kept AS (
                INSERT INTO worker.dead_letters (
                    id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at,
                    redrive_count, reason, last_error, errors, failed_by, ordering_key)
                SELECT id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at,
                    redrive_count, \(DeadLetterReason.cancelled.rawValue), \(note),
                    errors || jsonb_build_array(jsonb_build_object(
                        'attempt', attempts, 'at', now(), 'cancelled', \(note)::text, 'worker', leased_by)),
                    'workerctl', ordering_key
                FROM moved
            )
            SELECT id, lease_token IS NOT NULL AND visible_at > now() FROM moved
            """
        var jobs: [CancelledJob] = []
        for try await (id, leased) in try await client.query(query, logger: logger).decode((Int64, Bool).self) {
            jobs.append(CancelledJob(id: id, wasLeased: leased))
        }
        return jobs.sorted { $0.id < $1.id }
    }

    /// Makes up to `limit` matching jobs that wait out a retry's backoff
    /// (delayed, attempted before) ready now, attempts kept, and wakes the
    /// workers of their queues; returns their ids. Jobs waiting for their
    /// `run_at` are left as they are unless `scheduledToo`; ready, blocked
    /// and in-flight jobs always.
    public func retryNow(_ filter: JobFilter, limit: Int, scheduledToo: Bool = false) async throws -> [Int64] {
        var delayed = filter
        delayed.state = .delayed
        // `woken` runs because the final SELECT reads it: PostgreSQL skips a
        // SELECT in WITH that nothing reads. The notifications go out at commit.
        let query: PostgresQuery = """
            WITH picked AS (
                SELECT id FROM worker.jobs WHERE \(delayed) AND (attempts > 0 OR \(scheduledToo))
                ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), readied AS (
                UPDATE worker.jobs AS j SET visible_at = now() FROM picked WHERE j.id = picked.id
                RETURNING j.id, j.queue
            ), woken AS (
                SELECT pg_notify('worker_jobs', queue) FROM (SELECT DISTINCT queue FROM readied) AS q
            )
            SELECT id FROM readied, (SELECT count(*) FROM woken) AS w
            """
        return try await ids(query)
    }

    /// The job ids `query` answers, ascending.
    func ids(_ query: PostgresQuery) async throws -> [Int64] {
        var ids: [Int64] = []
        for try await id in try await client.query(query, logger: logger).decode(Int64.self) { ids.append(id) }
        return ids.sorted()
    }
}

extension JobFilter {
    /// A job's `JobState` in SQL, as `QueueStats` counts them.
    static let stateSQL = """
        CASE WHEN parked_visible_at IS NOT NULL THEN 'blocked' WHEN visible_at <= now() THEN 'ready'
             WHEN lease_token IS NOT NULL THEN 'in_flight' ELSE 'delayed' END
        """
}

extension PostgresQuery.StringInterpolation {
    /// `filter` as a WHERE condition, its values bound as parameters.
    mutating func appendInterpolation(_ filter: JobFilter) {
        appendCondition(filter.queue, as: "text", "queue = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.kind, as: "text", "kind = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.state?.rawValue, as: "text", "\(JobFilter.stateSQL) = ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.ids, as: "bigint[]", "id = ANY(", ")")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.enqueuedBy, as: "timestamptz", "created_at <= ")
        appendInterpolation(unescaped: " AND ")
        appendCondition(filter.afterID, as: "bigint", "id > ")
    }
}
