import Foundation
import Logging
import PostgresNIO

/// What the idempotency table holds for a key: the outcome of the event
/// processed under it, for as long as the key deduplicates. Answers "did
/// refund rf_1 go through, and what came of it?" (`workerctl keys show`).
public struct IdempotencyRecord: Sendable, Equatable, Encodable {
    public var key: String
    public var kind: String
    /// The job that processed the event; its duplicates were acked with its result.
    public var jobId: Int64
    /// `completed`, or `rejected`: a business rejection, recorded and not retried.
    public var status: String
    @JSONColumn public var result: String
    public var createdAt: Date
    public var expiresAt: Date
    /// Past `expiresAt`: a new job with the key is processed again, and the sweeper deletes the row.
    public var expired: Bool
}

public struct IdempotencyRecords: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The records of those of `keys` the table holds, in the order asked.
    public func find(_ keys: [String]) async throws -> [IdempotencyRecord] {
        let rows = try await client.query(
            """
            SELECT key, kind, job_id, status, result::text, created_at, expires_at, expires_at <= now()
            FROM worker.idempotency_keys WHERE key = ANY (\(keys))
            """, logger: logger)
        var found: [String: IdempotencyRecord] = [:]
        for try await r in rows.decode((String, String, Int64, String, String, Date, Date, Bool).self) {
            found[r.0] = IdempotencyRecord(
                key: r.0, kind: r.1, jobId: r.2, status: r.3, result: r.4, createdAt: r.5, expiresAt: r.6, expired: r.7)
        }
        return keys.compactMap { found[$0] }
    }
}
