import Logging
import PostgresNIO

/// What the idempotency table says about a job's key, inside its processing
/// transaction.
enum IdempotencyClaim: Sendable, Equatable {
    /// The key is this job's now (new, or taken over after it expired).
    case owned(key: String)
    /// A live key with the same payload: the event was already processed by `job`.
    case duplicate(key: String, of: Int64, status: String)
    /// A live key with another payload: a reused key.
    case conflict(key: String, of: Int64)
}

/// A key this transaction owns whose job is done: its result is stored with
/// the batch's ack.
struct CompletedKey: Sendable {
    let key: String
    let result: JobResult
}

extension JobTransaction {
    /// Inserts the job's idempotency key. A concurrent transaction holding the
    /// same key makes this wait for its outcome (the unique index), so two
    /// workers never both apply the same event.
    func claimIdempotencyKey(_ job: Job, key: String?, ttl: Duration) async throws -> IdempotencyClaim {
        let rows = try await connection.execute(
            ClaimKeyStatement(key: key, jobID: job.id, ttlMS: ttl.milliseconds), logger: logger)
        var mine: (key: String, hash: String, owned: Bool)?
        for try await row in rows { mine = row }
        guard let mine else { throw PostgresWorkerError.unexpected("job \(job.id) vanished while locked") }
        if mine.owned { return .owned(key: mine.key) }

        // A new statement sees the holder's committed row.
        let holder = try await connection.query(
            "SELECT job_id, payload_hash, status FROM worker.idempotency_keys WHERE key = \(mine.key)", logger: logger)
        for try await (jobID, hash, status) in holder.decode((Int64, String, String).self) {
            return hash == mine.hash
                ? .duplicate(key: mine.key, of: jobID, status: status)
                : .conflict(key: mine.key, of: jobID)
        }
        throw PostgresWorkerError.unexpected("idempotency key \(mine.key) neither inserted nor found")
    }

    /// Stores a business rejection on the key this transaction owns.
    func rejectIdempotencyKey(_ key: String, reason: String) async throws {
        try await connection.query(
            """
            UPDATE worker.idempotency_keys SET status = 'rejected', result = jsonb_build_object('rejected', \(reason)::text)
            WHERE key = \(key)
            """, logger: logger)
    }
}

/// The key claim of `claimIdempotencyKey`, prepared once per connection: it
/// runs for every keyed job.
struct ClaimKeyStatement: PostgresPreparedStatement {
    static let sql = """
        WITH job AS (
            SELECT coalesce($1::text, j.kind || ':' || h.hash) AS key, j.kind, h.hash
            FROM worker.jobs AS j,
                 LATERAL (SELECT encode(sha256(convert_to(j.payload::text, 'UTF8')), 'hex') AS hash) AS h
            WHERE j.id = $2
        ), claimed AS (
            INSERT INTO worker.idempotency_keys AS k (key, kind, job_id, payload_hash, status, expires_at)
            SELECT key, kind, $2, hash, 'processing', now() + $3::bigint * interval '1 millisecond'
            FROM job
            ON CONFLICT (key) DO UPDATE
            SET kind = EXCLUDED.kind, job_id = EXCLUDED.job_id, payload_hash = EXCLUDED.payload_hash,
                status = 'processing', result = '{}', created_at = now(), expires_at = EXCLUDED.expires_at
            WHERE k.expires_at <= now()
            RETURNING k.key
        )
        SELECT job.key, job.hash, EXISTS (SELECT 1 FROM claimed) FROM job
        """
    typealias Row = (String, String, Bool)

    var key: String?
    var jobID: Int64
    var ttlMS: Int64

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(key)
        bindings.append(jobID)
        bindings.append(ttlMS)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
