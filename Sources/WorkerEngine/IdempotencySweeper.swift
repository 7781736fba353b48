import Logging
import PostgresNIO

/// Deletes expired idempotency keys in small batches, each its own short
/// transaction, so it never holds many locks or blocks workers for long.
/// Across a fleet one sweep runs at a time: each batch first takes a
/// transaction-level advisory lock and skips the round when another host holds it.
public struct IdempotencySweeper: Sendable {
    public let client: PostgresClient
    public let logger: Logger
    public var batchSize: Int

    /// Arbitrary, fixed: the advisory lock that serialises sweeps across hosts.
    static let lockKey: Int64 = 0x776F_726B_6572_0001

    public init(client: PostgresClient, logger: Logger, batchSize: Int = 1000) {
        self.client = client
        self.logger = logger
        self.batchSize = batchSize
    }

    public struct Report: Sendable, Equatable {
        public var deleted = 0
        /// Another sweeper held the lock, so this one did nothing.
        public var skipped = false
    }

    /// Sweeps until no expired key is left or `maxBatches` ran.
    public func sweep(maxBatches: Int = .max) async throws -> Report {
        var report = Report()
        for _ in 0..<maxBatches {
            guard let deleted = try await sweepBatch() else {
                report.skipped = true
                break
            }
            report.deleted += deleted
            if deleted < batchSize { break }
        }
        if report.deleted > 0 { logger.info("expired idempotency keys swept", metadata: ["deleted": "\(report.deleted)"]) }
        return report
    }

    /// One batch; `nil` when another sweeper holds the lock.
    private func sweepBatch() async throws -> Int? {
        let (batchSize, logger) = (self.batchSize, self.logger)
        return try await client.withLiveConnection { connection in
            try await connection.withTransaction(logger: logger) { connection in
                let locked = try await connection.query(
                    "SELECT pg_try_advisory_xact_lock(\(Self.lockKey))", logger: logger)
                for try await got in locked.decode(Bool.self) where !got { return nil }
                let rows = try await connection.query(
                    """
                    WITH expired AS (
                        SELECT key FROM worker.idempotency_keys
                        WHERE expires_at <= now()
                        ORDER BY expires_at
                        LIMIT \(batchSize)
                        FOR UPDATE SKIP LOCKED
                    )
                    DELETE FROM worker.idempotency_keys AS k USING expired
                    WHERE k.key = expired.key AND k.expires_at <= now()
                    RETURNING 1
                    """, logger: logger)
                var deleted = 0
                for try await _ in rows.decode(Int.self) { deleted += 1 }
                return deleted
            }
        }
    }
}
