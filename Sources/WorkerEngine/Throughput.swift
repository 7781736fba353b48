import Foundation
import Logging
import PostgresNIO

/// Jobs finished by one worker for one queue and kind, not yet written to
/// `worker.throughput`.
public struct ThroughputTally: Sendable, Equatable {
    public var done = 0
    public var duplicates = 0
    public var rejected = 0
    public var retried = 0
    public var deadLettered = 0

    public init() {}

    public var isEmpty: Bool { self == ThroughputTally() }

    public static func += (lhs: inout ThroughputTally, rhs: ThroughputTally) {
        lhs.done += rhs.done
        lhs.duplicates += rhs.duplicates
        lhs.rejected += rhs.rejected
        lhs.retried += rhs.retried
        lhs.deadLettered += rhs.deadLettered
    }

    public mutating func add(_ outcome: JobOutcome) {
        switch outcome {
        case .done: done += 1
        case .duplicate: duplicates += 1
        case .rejected: rejected += 1
        case .retried: retried += 1
        case .deadLettered: deadLettered += 1
        case .leaseLost, .released, .snoozed: break  // another attempt will count them
        }
    }
}

/// The `worker.throughput` table: each worker adds its tallies to the current
/// 10-second bucket; `workerctl stats` sums the last minute.
public struct Throughput: Sendable {
    public struct Key: Sendable, Hashable {
        public var queue: String
        public var kind: String
        public init(queue: String, kind: String) {
            self.queue = queue
            self.kind = kind
        }
    }

    /// Rows older than this are deleted as workers write new ones.
    public static let retention: Duration = .seconds(86_400)

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Adds `tallies` to this worker's rows of the current bucket, and deletes
    /// rows past the retention (of any worker: worker ids change on restart).
    public func record(_ tallies: [Key: ThroughputTally], workerID: String) async throws {
        guard !tallies.isEmpty else { return }
        let keys = Array(tallies.keys)
        let counts = keys.map { tallies[$0]! }
        let logger = logger
        _ = try await client.withLiveConnection { connection in
            try await connection.query(
                """
                WITH added AS (
                    INSERT INTO worker.throughput AS t
                        (bucket, worker_id, queue, kind, done, duplicates, rejected, retried, dead_lettered)
                    SELECT date_bin('10 seconds', now(), timestamptz '2000-01-01'), \(workerID), r.*
                    FROM unnest(\(keys.map(\.queue))::text[], \(keys.map(\.kind))::text[],
                                \(counts.map(\.done))::int[], \(counts.map(\.duplicates))::int[],
                                \(counts.map(\.rejected))::int[], \(counts.map(\.retried))::int[],
                                \(counts.map(\.deadLettered))::int[]) AS r
                    ON CONFLICT (bucket, worker_id, queue, kind) DO UPDATE SET
                        done = t.done + excluded.done, duplicates = t.duplicates + excluded.duplicates,
                        rejected = t.rejected + excluded.rejected, retried = t.retried + excluded.retried,
                        dead_lettered = t.dead_lettered + excluded.dead_lettered
                )
                DELETE FROM worker.throughput
                WHERE bucket < now() - \(Self.retention.milliseconds)::bigint * interval '1 millisecond'
                """, logger: logger)
        }
    }
}
