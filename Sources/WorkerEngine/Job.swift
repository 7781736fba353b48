import Foundation

/// A job as a worker holds it after claiming it: the row plus the lease it won.
public struct Job: Sendable, Equatable, Identifiable {
    public var id: Int64
    public var queue: String
    public var kind: String
    /// The payload as JSON text, exactly as PostgreSQL stores it.
    public let payload: String
    /// The payload parsed once: the schema check, the lock order, the
    /// idempotency key and the handler all read it, and parsing it for each was
    /// a twentieth of workerd's CPU time in a refund and booking mix. `nil`:
    /// not JSON, or longer than the claim's parse limit (such a job is refused
    /// as too large before anything reads its payload).
    public let document: JSONValue?
    public var idempotencyKey: String?
    public var priority: Int
    /// Attempts started so far, this one included (committed by the claim).
    public var attempts: Int
    /// The producer's limit for this job; `nil` leaves it to the kind's retry policy.
    public var maxAttempts: Int?
    public var createdAt: Date
    public var redriveCount: Int
    public var lease: Lease

    public init(
        id: Int64, queue: String, kind: String, payload: String, idempotencyKey: String?, priority: Int,
        attempts: Int, maxAttempts: Int?, createdAt: Date, redriveCount: Int, lease: Lease,
        parsingUpTo parseLimit: Int = .max
    ) {
        self.id = id
        self.queue = queue
        self.kind = kind
        self.payload = payload
        self.document = payload.utf8.count <= parseLimit ? try? JSONValue(parsing: payload) : nil
        self.idempotencyKey = idempotencyKey
        self.priority = priority
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.createdAt = createdAt
        self.redriveCount = redriveCount
        self.lease = lease
    }
}

/// The right to finish one job, won by a claim. The token is a fencing token:
/// every later write checks it, so a worker whose lease expired and was claimed
/// again cannot ack, fail or apply effects for the job.
public struct Lease: Sendable, Hashable {
    public var jobID: Int64
    public var token: UUID

    public init(jobID: Int64, token: UUID) {
        self.jobID = jobID
        self.token = token
    }
}
