import Foundation
import Logging
import PostgresNIO

/// The state of one queue, as `workerctl stats` prints it.
public struct QueueStats: Sendable, Equatable, Codable {
    public var queue: String
    /// Claimable now (including jobs whose lease expired).
    public var ready: Int
    /// Leased by a worker whose lease has not expired.
    public var inFlight: Int
    /// Waiting for a retry or a scheduled time.
    public var delayed: Int
    public var dead: Int
    /// Seconds since the oldest ready job was enqueued: the queue's
    /// ApproximateAgeOfOldestMessage. 0 when nothing is ready.
    public var oldestReadyAgeSeconds: Double
    /// Jobs in the queue that have failed at least once.
    public var retrying: Int
    /// The highest attempt count among queued jobs.
    public var maxAttempts: Int

    /// Reads the stats of every queue that has jobs or dead letters.
    public static func read(client: PostgresClient, logger: Logger) async throws -> [QueueStats] {
        let rows = try await client.query(
            """
            WITH q AS (
                SELECT queue,
                       count(*) FILTER (WHERE visible_at <= now()) AS ready,
                       count(*) FILTER (WHERE visible_at > now() AND lease_token IS NOT NULL) AS in_flight,
                       count(*) FILTER (WHERE visible_at > now() AND lease_token IS NULL) AS delayed,
                       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE visible_at <= now())), 0)::float8
                           AS oldest_ready_age,
                       count(*) FILTER (WHERE errors <> '[]'::jsonb) AS retrying,
                       coalesce(max(attempts), 0) AS max_attempts
                FROM worker.jobs GROUP BY queue
            ), d AS (
                SELECT queue, count(*) AS dead FROM worker.dead_letters GROUP BY queue
            )
            SELECT coalesce(q.queue, d.queue), coalesce(q.ready, 0), coalesce(q.in_flight, 0), coalesce(q.delayed, 0),
                   coalesce(d.dead, 0), coalesce(q.oldest_ready_age, 0), coalesce(q.retrying, 0),
                   coalesce(q.max_attempts, 0)
            FROM q FULL JOIN d ON d.queue = q.queue
            ORDER BY 1
            """, logger: logger)
        var stats: [QueueStats] = []
        for try await r in rows.decode((String, Int, Int, Int, Int, Double, Int, Int).self) {
            stats.append(QueueStats(
                queue: r.0, ready: r.1, inFlight: r.2, delayed: r.3, dead: r.4, oldestReadyAgeSeconds: r.5,
                retrying: r.6, maxAttempts: r.7))
        }
        return stats
    }
}

/// What became of the events of one kind whose idempotency keys are still
/// live (by default the last 24 hours): applied, or rejected by the business.
public struct KindOutcomes: Sendable, Equatable, Codable {
    public var kind: String
    public var completed: Int
    public var rejected: Int
    /// Keys past their expiry that the sweeper has not deleted yet.
    public var expiredKeys: Int

    public static func read(client: PostgresClient, logger: Logger) async throws -> [KindOutcomes] {
        let rows = try await client.query(
            """
            SELECT kind,
                   count(*) FILTER (WHERE status = 'completed' AND expires_at > now())::int,
                   count(*) FILTER (WHERE status = 'rejected' AND expires_at > now())::int,
                   count(*) FILTER (WHERE expires_at <= now())::int
            FROM worker.idempotency_keys GROUP BY kind ORDER BY kind
            """, logger: logger)
        var outcomes: [KindOutcomes] = []
        for try await r in rows.decode((String, Int, Int, Int).self) {
            outcomes.append(KindOutcomes(kind: r.0, completed: r.1, rejected: r.2, expiredKeys: r.3))
        }
        return outcomes
    }
}
