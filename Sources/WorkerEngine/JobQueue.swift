import Foundation
import Logging
import PostgresNIO

/// The queue operations on `worker.jobs`. Each method is one statement (or one
/// short transaction): the queue's correctness lives in these statements.
public struct JobQueue: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Inserts a job the way a producer's `worker.enqueue` call does, and
    /// returns its id: with a job key, that of the job waiting under the key
    /// if one was.
    @discardableResult
    public func enqueue(_ job: NewJob) async throws -> Int64 { try await submit(job).id }

    /// `enqueue`, telling also whether a job was waiting under the key.
    public func submit(_ job: NewJob) async throws -> Enqueued {
        let logger = logger
        return try await client.withLiveConnection { connection in
            guard job.jobKey != nil else {
                return Enqueued(id: try await Self.call(job, on: connection, logger: logger), wasWaiting: false)
            }
            do {
                return try await connection.withTransaction(logger: logger) { connection in
                    let id = try await Self.call(job, on: connection, logger: logger)
                    // A job this transaction inserted was created at its start
                    // (now()); a changed one keeps the time of another's.
                    let created = try await connection.query(
                        "SELECT created_at = now() FROM worker.jobs WHERE id = \(id)", logger: logger)
                    for try await isNew in created.decode(Bool.self) { return Enqueued(id: id, wasWaiting: !isNew) }
                    throw PostgresWorkerError.unexpected("job \(id) from worker.enqueue is not in worker.jobs")
                }
            } catch let failed as PostgresTransactionError {
                throw failed.closureError ?? failed  // the statement's own error, as without a key
            }
        }
    }

    /// `worker.enqueue` called with the job's fields; the id it returns.
    private static func call(_ job: NewJob, on connection: PostgresConnection, logger: Logger) async throws -> Int64 {
        let called = try await connection.query(
            """
            SELECT worker.enqueue(
                queue => \(job.queue), kind => \(job.kind), payload => \(job.payload)::jsonb,
                idempotency_key => \(job.idempotencyKey), priority => \(job.priority)::smallint,
                run_at => now() + \(job.delay.milliseconds)::bigint * interval '1 millisecond',
                max_attempts => \(job.maxAttempts)::integer, ordering_key => \(job.orderingKey),
                job_key => \(job.jobKey), job_key_mode => \(job.jobKeyMode.rawValue))
            """, logger: logger)
        for try await id in called.decode(Int64.self) { return id }
        throw PostgresWorkerError.unexpected("worker.enqueue returned no id")
    }

    /// Inserts `count` copies of a job in one statement; returns the range of their ids.
    public func enqueue(_ job: NewJob, count: Int) async throws -> ClosedRange<Int64> {
        let logger = logger
        return try await client.withLiveConnection { connection in
        let rows = try await connection.query(
            """
            WITH inserted AS (
                INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, max_attempts, visible_at,
                                         ordering_key)
                SELECT \(job.queue), \(job.kind), \(job.payload)::jsonb, \(job.idempotencyKey), \(job.priority)::smallint,
                       \(job.maxAttempts)::integer, now() + \(job.delay.milliseconds)::bigint * interval '1 millisecond',
                       \(job.orderingKey)
                FROM generate_series(1, \(count))
                RETURNING id
            )
            SELECT min(id), max(id) FROM inserted
            """, logger: logger)
        for try await (first, last) in rows.decode((Int64, Int64).self) { return first...last }
        throw PostgresWorkerError.unexpected("INSERT returned no ids")
        }
    }

    /// Claims up to `limit` ready jobs of `queue` in its own short transaction.
    ///
    /// `FOR UPDATE SKIP LOCKED` lets any number of workers claim at once without
    /// waiting on each other or ever getting the same row. The statement commits
    /// `attempts + 1` before any handler runs, so a job that crashes its worker
    /// still counts its attempts, and a fresh lease token fences out the previous
    /// holder. A job whose previous lease expired gets that lost attempt written
    /// into its error history. A paused queue yields nothing.
    ///
    /// The statement is `worker.claim` (sql/008): a function, so that its plan
    /// is the claim index read in order whatever the statistics say; its call
    /// is prepared (`ClaimCall`). Payloads longer than `payloadLimit` bytes are
    /// not parsed (`Job.document` is nil): the processor refuses them unread.
    public func claim(
        queue: String, limit: Int, visibilityTimeout: Duration, workerID: String, payloadLimit: Int = .max
    ) async throws -> [Job] {
        try await client.withConnection { connection in
            try await claim(
                queue: queue, limit: limit, visibilityTimeout: visibilityTimeout, workerID: workerID,
                payloadLimit: payloadLimit, on: connection)
        }
    }

    /// `claim` on a connection the caller holds (a worker lane keeps one for
    /// a run of batches); like `withLiveConnection`, it fails as soon as the
    /// connection closes, and cancelling it closes the connection.
    public func claim(
        queue: String, limit: Int, visibilityTimeout: Duration, workerID: String, payloadLimit: Int = .max,
        on connection: PostgresConnection
    ) async throws -> [Job] {
        let logger = logger
        let call = ClaimCall(
            queue: queue, limit: Int32(clamping: limit), visibilityMS: visibilityTimeout.milliseconds, workerID: workerID,
            payloadLimit: payloadLimit)
        return try await connection.failingOnClose { connection in
            var jobs: [Job] = []
            for try await job in try await connection.execute(call, logger: logger) { jobs.append(job) }
            return jobs.sorted { ($0.priority, $0.id) < ($1.priority, $1.id) }
        }
    }

    /// Pushes the expiry of held leases forward (the heartbeat of long jobs).
    /// Rows locked by a processing transaction are skipped rather than waited
    /// for: while locked, nobody else can claim them anyway. Returns the leases
    /// that were extended; a lease missing from the answer is either being
    /// processed right now or was lost.
    @discardableResult
    public func extend(_ leases: [Lease], visibilityTimeout: Duration) async throws -> Set<Lease> {
        let logger = logger
        return try await client.withLiveConnection {
            try await Self.extend(leases, visibilityTimeout: visibilityTimeout, on: $0, logger: logger)
        }
    }

    /// A heartbeat on one pooled connection: extends `leases` (see `extend`)
    /// and answers which of the backend pids `pids` the server still has a
    /// session for.
    public func beat(
        extending leases: [Lease], visibilityTimeout: Duration, checking pids: [Int32]
    ) async throws -> (extended: Set<Lease>, live: Set<Int32>) {
        let logger = logger
        return try await client.withLiveConnection { connection in
            (try await Self.extend(leases, visibilityTimeout: visibilityTimeout, on: connection, logger: logger),
             try await Self.liveSessions(pids, on: connection, logger: logger))
        }
    }

    static func extend(
        _ leases: [Lease], visibilityTimeout: Duration, on connection: PostgresConnection, logger: Logger
    ) async throws -> Set<Lease> {
        guard !leases.isEmpty else { return [] }
        let rows = try await connection.query(
            """
            WITH held AS (
                SELECT j.id FROM worker.jobs AS j
                JOIN unnest(\(leases.map(\.jobID))::bigint[], \(leases.map(\.token))::uuid[]) AS l(id, token)
                  ON j.id = l.id AND j.lease_token = l.token
                -- An expired lease under a fleet-wide limit gave its slot to another job: not revived.
                WHERE NOT j.under_limit OR j.visible_at > now()
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE worker.jobs AS j
            SET visible_at = now() + \(visibilityTimeout.milliseconds)::bigint * interval '1 millisecond'
            FROM held WHERE j.id = held.id
            RETURNING j.id, j.lease_token
            """, logger: logger)
        var extended: Set<Lease> = []
        for try await (id, token) in rows.decode((Int64, UUID).self) { extended.insert(Lease(jobID: id, token: token)) }
        return extended
    }

    static func liveSessions(_ pids: [Int32], on connection: PostgresConnection, logger: Logger) async throws -> Set<Int32> {
        guard !pids.isEmpty else { return [] }
        let rows = try await connection.query(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(\(pids)::integer[])", logger: logger)
        var live: Set<Int32> = []
        for try await pid in rows.decode(Int32.self) { live.insert(pid) }
        return live
    }

    /// Gives back leases that were claimed but not started (shutdown): the jobs
    /// are ready at once and the attempt is not counted.
    @discardableResult
    public func release(_ leases: [Lease]) async throws -> Int {
        guard !leases.isEmpty else { return 0 }
        let logger = logger
        return try await client.withLiveConnection { try await Self.release(leases, on: $0, logger: logger).count }
    }

    /// The ids of the jobs released (those whose lease was still the caller's).
    static func release(_ leases: [Lease], on connection: PostgresConnection, logger: Logger) async throws -> Set<Int64> {
        let rows = try await connection.query(
            """
            UPDATE worker.jobs AS j
            SET visible_at = now(), lease_token = NULL, leased_by = NULL, leased_at = NULL,
                attempts = greatest(j.attempts - 1, 0)
            FROM unnest(\(leases.map(\.jobID))::bigint[], \(leases.map(\.token))::uuid[]) AS l(id, token)
            WHERE j.id = l.id AND j.lease_token = l.token
            RETURNING j.id
            """, logger: logger)
        var released: Set<Int64> = []
        for try await id in rows.decode(Int64.self) { released.insert(id) }
        return released
    }
}

/// A job as a producer describes it.
public struct NewJob: Sendable {
    public var queue: String
    public var kind: String
    public var payload: String
    public var idempotencyKey: String?
    public var priority: Int
    public var maxAttempts: Int?
    public var delay: Duration
    /// Jobs of one queue with the same ordering key run one at a time, in id order.
    public var orderingKey: String?
    /// At most one job of the queue and kind waits under a job key (sql/023).
    public var jobKey: String?
    /// What a call with the key of a waiting job does to that job.
    public var jobKeyMode: JobKeyMode

    public init(
        queue: String = "default", kind: String, payload: String = "{}", idempotencyKey: String? = nil,
        priority: Int = 0, maxAttempts: Int? = nil, delay: Duration = .zero, orderingKey: String? = nil,
        jobKey: String? = nil, jobKeyMode: JobKeyMode = .replace
    ) {
        self.queue = queue
        self.kind = kind
        self.payload = payload
        self.idempotencyKey = idempotencyKey
        self.priority = priority
        self.maxAttempts = maxAttempts
        self.delay = delay
        self.orderingKey = orderingKey
        self.jobKey = jobKey
        self.jobKeyMode = jobKeyMode
    }
}

/// What `worker.enqueue` does when a job of the queue and kind waits under
/// the key it is given (sql/025). Each keeps that one job.
public enum JobKeyMode: String, Sendable, CaseIterable {
    /// Its payload, idempotency key, priority, max attempts and run time become the call's: a debounce.
    case replace
    /// The same, but its run time stays: a throttle.
    case preserveRunAt = "preserve_run_at"
    /// It stays as it is: a dedupe.
    case keep
}

/// A job `enqueue` inserted, or the one that waited under its key.
public struct Enqueued: Sendable, Equatable {
    public var id: Int64
    /// A job was waiting under the key: the call went to it.
    public var wasWaiting: Bool

    public init(id: Int64, wasWaiting: Bool) {
        self.id = id
        self.wasWaiting = wasWaiting
    }
}

/// Failures of the engine itself, as opposed to a job's own failure.
public enum PostgresWorkerError: Error, CustomStringConvertible, Sendable {
    case unexpected(String)
    case schemaOutdated(found: Int, required: Int)

    public var description: String {
        switch self {
        case .unexpected(let message): "unexpected database answer: \(message)"
        case .schemaOutdated(let found, let required):
            "the database schema is at version \(found) but this build needs \(required): run `workerctl migrate`"
        }
    }
}
