import Foundation
import PostgresNIO

// The calls of the queue's functions (sql/008, sql/010), prepared once per
// connection under short names. A call's own plan is a function scan whatever
// the statistics say (the functions fix their statements' plans), so it is
// safe to keep. Prepared, a no-op drain went 3-8% faster in three interleaved
// pairs; under postgres-nio's default name (the type's reflected name, built
// for every execution) it was no faster at all.
// Rows are decoded cell by cell: decoding a tuple looked up the tuple's type
// metadata at run time for every row (4% of a no-op drain's CPU).

/// `worker.claim`: up to `limit` ready jobs of `queue`, leased to `workerID`.
struct ClaimCall: PostgresPreparedStatement {
    static let name = "worker_claim"
    static let sql = """
        SELECT id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at,
               redrive_count, lease_token
        FROM worker.claim($1, $2, $3, $4)
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .int4, .int8, .text]

    var queue: String
    var limit: Int32
    var visibilityMS: Int64
    var workerID: String
    /// Longer payloads are not parsed: they are refused unread as too large.
    var payloadLimit: Int

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(queue)
        bindings.append(limit)
        bindings.append(visibilityMS)
        bindings.append(workerID)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job {
        let cells = row.makeRandomAccess()
        let id = try cells[0].decode(Int64.self)
        return Job(
            id: id, queue: try cells[1].decode(String.self), kind: try cells[2].decode(String.self),
            payload: try cells[3].decode(String.self), idempotencyKey: try cells[4].decode(String?.self),
            priority: try cells[5].decode(Int.self), attempts: try cells[6].decode(Int.self),
            maxAttempts: try cells[7].decode(Int?.self), createdAt: try cells[8].decode(Date.self),
            redriveCount: try cells[9].decode(Int.self), lease: Lease(jobID: id, token: try cells[10].decode(UUID.self)),
            parsingUpTo: payloadLimit)
    }
}

/// `worker.lock_jobs`: each locked job's id, its age in milliseconds, and the session's pid.
struct LockJobsCall: PostgresPreparedStatement {
    static let name = "worker_lock_jobs"
    static let sql = "SELECT id, age_ms, backend_pid FROM worker.lock_jobs($1, $2)"
    static let bindingDataTypes: [PostgresDataType] = [.int8Array, .uuidArray]

    var leases: [Lease]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(leases.map(\.jobID))
        bindings.append(leases.map(\.token))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> (id: Int64, ageMS: Int64, session: Int32) {
        let cells = row.makeRandomAccess()
        return (try cells[0].decode(Int64.self), try cells[1].decode(Int64.self), try cells[2].decode(Int32.self))
    }
}

/// `worker.claim_keys`: one row per request, in the order of `requests`.
struct ClaimKeysCall: PostgresPreparedStatement {
    static let name = "worker_claim_keys"
    static let sql = """
        SELECT job_id, key, payload_hash, owned, holder, holder_hash, holder_status
        FROM worker.claim_keys($1, $2, $3, $4)
        """
    static let bindingDataTypes: [PostgresDataType] = [.int8Array, .textArray, .boolArray, .int8Array]

    var requests: [KeyRequest]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(requests.map(\.jobID))
        // An array of optionals does not bind: a flag says which keys were given.
        bindings.append(requests.map { $0.key ?? "" })
        bindings.append(requests.map { $0.key != nil })
        bindings.append(requests.map(\.ttl.milliseconds))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> KeyClaimRow {
        let cells = row.makeRandomAccess()
        return KeyClaimRow(
            jobID: try cells[0].decode(Int64.self), key: try cells[1].decode(String.self),
            hash: try cells[2].decode(String.self), owned: try cells[3].decode(Bool.self),
            holder: try cells[4].decode(Int64?.self), holderHash: try cells[5].decode(String?.self),
            holderStatus: try cells[6].decode(String?.self))
    }
}

/// One job's answer from `worker.claim_keys`.
struct KeyClaimRow {
    var jobID: Int64
    var key: String
    var hash: String
    var owned: Bool
    var holder: Int64?
    var holderHash: String?
    var holderStatus: String?
}

/// `worker.ack_jobs`: the ids of the finished jobs it deleted.
struct AckJobsCall: PostgresPreparedStatement {
    static let name = "worker_ack_jobs"
    static let sql = "SELECT id FROM worker.ack_jobs($1, $2, $3, $4::text[]::jsonb[])"
    static let bindingDataTypes: [PostgresDataType] = [.int8Array, .uuidArray, .textArray, .textArray]

    var leases: [Lease]
    var keys: [CompletedKey]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(leases.map(\.jobID))
        bindings.append(leases.map(\.token))
        bindings.append(keys.map(\.key))
        bindings.append(keys.map(\.result.json))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.makeRandomAccess()[0].decode(Int64.self) }
}
