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

    var ownedKey: String? {
        if case .owned(let key) = self { key } else { nil }
    }

    /// The job that holds the key, when it is another.
    var holder: Int64? {
        switch self {
        case .owned: nil
        case .duplicate(_, let job, _), .conflict(_, let job): job
        }
    }
}

/// A job whose key the batch claims, with the key the producer or the handler
/// gave (`nil`: the kind and a hash of the payload) and its lifetime.
struct KeyRequest: Sendable {
    let jobID: Int64
    let key: String?
    let ttl: Duration
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
        let claims = try await claimIdempotencyKeys([KeyRequest(jobID: job.id, key: key, ttl: ttl)])
        guard let claim = claims[job.id] else { throw PostgresWorkerError.unexpected("job \(job.id) vanished while locked") }
        return claim
    }

    /// The keys of a whole batch in one statement (worker.claim_keys, sql/010),
    /// in `requests` order: a key asked for twice goes to the first job, and the
    /// second is a duplicate (or conflict) of it. The holder of a key not
    /// claimed is read from the statement's snapshot, which misses a holder
    /// that committed while the insert waited for it: those are looked up again.
    func claimIdempotencyKeys(_ requests: [KeyRequest]) async throws -> [Int64: IdempotencyClaim] {
        var claims: [Int64: IdempotencyClaim] = [:]
        var unseen: [(jobID: Int64, key: String, hash: String)] = []
        for try await row in try await connection.execute(ClaimKeysCall(requests: requests), logger: logger) {
            if row.owned {
                claims[row.jobID] = .owned(key: row.key)
            } else if let holder = row.holder, let holderHash = row.holderHash, let holderStatus = row.holderStatus {
                claims[row.jobID] = holderHash == row.hash
                    ? .duplicate(key: row.key, of: holder, status: holderStatus) : .conflict(key: row.key, of: holder)
            } else {
                unseen.append((row.jobID, row.key, row.hash))
            }
        }
        for (jobID, key, hash) in unseen { claims[jobID] = try await heldKey(key, hash: hash) }
        guard claims.count == requests.count else {
            throw PostgresWorkerError.unexpected("a job of the batch vanished while locked")
        }
        return claims
    }

    /// Who holds a key this transaction could not claim. A new statement sees
    /// the holder's committed row.
    private func heldKey(_ key: String, hash: String) async throws -> IdempotencyClaim {
        let holder = try await connection.query(
            "SELECT job_id, payload_hash, status FROM worker.idempotency_keys WHERE key = \(key)", logger: logger)
        for try await (jobID, holderHash, status) in holder.decode((Int64, String, String).self) {
            return holderHash == hash ? .duplicate(key: key, of: jobID, status: status) : .conflict(key: key, of: jobID)
        }
        throw PostgresWorkerError.unexpected("idempotency key \(key) neither inserted nor found")
    }

    /// Gives back keys claimed for jobs that will not start (a shutdown).
    func dropIdempotencyKeys(_ keys: [String]) async throws {
        guard !keys.isEmpty else { return }
        try await connection.query("DELETE FROM worker.idempotency_keys WHERE key = ANY(\(keys)::text[])", logger: logger)
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
