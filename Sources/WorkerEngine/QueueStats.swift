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
    /// Waiting for an earlier job of their ordering key.
    public var blocked: Int
    public var dead: Int
    /// Seconds since the oldest ready job was enqueued: the queue's
    /// ApproximateAgeOfOldestMessage. 0 when nothing is ready.
    public var oldestReadyAgeSeconds: Double
    /// Jobs in the queue that have failed at least once.
    public var retrying: Int
    /// The highest attempt count among queued jobs.
    public var highestAttempt: Int
    /// Jobs that left the queue (done, duplicate, rejected or dead-lettered)
    /// in the last minute, as the workers report it every 10 seconds.
    public var finishedLastMinute: Int
    public var paused: Bool
    /// The fleet-wide limit on its jobs in flight (`workerctl limits`), if any.
    public var maxInFlight: Int?
    /// The fleet-wide limit on its jobs claimed per second, if any.
    public var maxPerSecond: Double?

    /// Reads every queue that has jobs, dead letters, recent throughput, a
    /// pause or a limit; with `queues`, only those (the others are not scanned).
    public static func read(client: PostgresClient, queues: [String]? = nil, logger: Logger) async throws -> [QueueStats] {
        try await client.withLiveConnection { try await read(on: $0, queues: queues, logger: logger) }
    }

    public static func read(on connection: PostgresConnection, queues: [String]? = nil, logger: Logger) async throws -> [QueueStats] {
        let rows = try await connection.query(
            """
            WITH q AS (
                SELECT queue,
                       count(*) FILTER (WHERE visible_at <= now()) AS ready,
                       count(*) FILTER (WHERE visible_at > now() AND lease_token IS NOT NULL) AS in_flight,
                       count(*) FILTER (WHERE visible_at > now() AND lease_token IS NULL AND parked_visible_at IS NULL)
                           AS delayed,
                       count(*) FILTER (WHERE parked_visible_at IS NOT NULL) AS blocked,
                       -- isfinite(): an owner's created_at of 'infinity' would fail every read of the stats.
                       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE visible_at <= now() AND isfinite(created_at))), 0)::float8
                           AS oldest_ready_age,
                       count(*) FILTER (WHERE errors <> '[]'::jsonb) AS retrying,
                       coalesce(max(attempts), 0) AS highest_attempt
                FROM worker.jobs WHERE \(queues)::text[] IS NULL OR queue = ANY(\(queues)::text[]) GROUP BY queue
            ), d AS (
                SELECT queue, count(*) AS dead FROM worker.dead_letters
                WHERE \(queues)::text[] IS NULL OR queue = ANY(\(queues)::text[]) GROUP BY queue
            ), t AS (
                SELECT queue, sum(done + duplicates + rejected + dead_lettered) AS finished
                FROM worker.throughput WHERE bucket > now() - interval '1 minute'
                  AND (\(queues)::text[] IS NULL OR queue = ANY(\(queues)::text[])) GROUP BY queue
            ), names AS (
                SELECT queue FROM q UNION SELECT queue FROM d UNION SELECT queue FROM t
                UNION SELECT queue FROM worker.queue_pauses
                WHERE \(queues)::text[] IS NULL OR queue = ANY(\(queues)::text[])
                UNION SELECT queue FROM worker.queue_limits
                WHERE \(queues)::text[] IS NULL OR queue = ANY(\(queues)::text[])
            )
            SELECT n.queue, coalesce(q.ready, 0), coalesce(q.in_flight, 0), coalesce(q.delayed, 0),
                   coalesce(q.blocked, 0), coalesce(d.dead, 0), coalesce(q.oldest_ready_age, 0), coalesce(q.retrying, 0),
                   coalesce(q.highest_attempt, 0), coalesce(t.finished, 0)::int8,
                   EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = n.queue),
                   l.max_in_flight, l.max_per_second
            FROM names AS n
            LEFT JOIN q ON q.queue = n.queue LEFT JOIN d ON d.queue = n.queue LEFT JOIN t ON t.queue = n.queue
            LEFT JOIN worker.queue_limits AS l ON l.queue = n.queue
            ORDER BY 1
            """, logger: logger)
        var stats: [QueueStats] = []
        for try await r in rows.decode((String, Int, Int, Int, Int, Int, Double, Int, Int, Int, Bool, Int?, Double?).self) {
            stats.append(QueueStats(
                queue: r.0, ready: r.1, inFlight: r.2, delayed: r.3, blocked: r.4, dead: r.5, oldestReadyAgeSeconds: r.6,
                retrying: r.7, highestAttempt: r.8, finishedLastMinute: r.9, paused: r.10, maxInFlight: r.11, maxPerSecond: r.12))
        }
        return stats
    }
}

/// One kind: its throughput over the last minute, and what became of its
/// events whose idempotency keys are still live (by default the last 24
/// hours): applied, or rejected by the business.
public struct KindOutcomes: Sendable, Equatable, Codable {
    public var kind: String
    /// Done, duplicate or rejected in the last minute.
    public var doneLastMinute: Int
    public var retriedLastMinute: Int
    public var deadLetteredLastMinute: Int
    /// Live idempotency keys by outcome.
    public var completed: Int
    public var rejected: Int
    /// Keys past their expiry that the sweeper has not deleted yet.
    public var expiredKeys: Int

    public static func read(client: PostgresClient, logger: Logger) async throws -> [KindOutcomes] {
        let rows = try await client.query(
            """
            WITH k AS (
                SELECT kind,
                       count(*) FILTER (WHERE status = 'completed' AND expires_at > now()) AS completed,
                       count(*) FILTER (WHERE status = 'rejected' AND expires_at > now()) AS rejected,
                       count(*) FILTER (WHERE expires_at <= now()) AS expired
                FROM worker.idempotency_keys GROUP BY kind
            ), t AS (
                SELECT kind, sum(done + duplicates + rejected) AS done, sum(retried) AS retried,
                       sum(dead_lettered) AS dead
                FROM worker.throughput WHERE bucket > now() - interval '1 minute' GROUP BY kind
            )
            SELECT coalesce(k.kind, t.kind), coalesce(t.done, 0)::int8, coalesce(t.retried, 0)::int8,
                   coalesce(t.dead, 0)::int8, coalesce(k.completed, 0), coalesce(k.rejected, 0), coalesce(k.expired, 0)
            FROM k FULL JOIN t ON t.kind = k.kind
            ORDER BY 1
            """, logger: logger)
        var outcomes: [KindOutcomes] = []
        for try await r in rows.decode((String, Int, Int, Int, Int, Int, Int).self) {
            outcomes.append(KindOutcomes(
                kind: r.0, doneLastMinute: r.1, retriedLastMinute: r.2, deadLetteredLastMinute: r.3,
                completed: r.4, rejected: r.5, expiredKeys: r.6))
        }
        return outcomes
    }
}

/// Dead letters of one queue and reason: what an operator redrives or fixes.
public struct DeadLetterCount: Sendable, Equatable, Codable {
    public var queue: String
    public var reason: String
    public var count: Int
    public var newest: Date

    public static func read(client: PostgresClient, queue: String? = nil, logger: Logger) async throws -> [DeadLetterCount] {
        let rows = try await client.query(
            """
            SELECT queue, reason, count(*)::int, max(failed_at)
            FROM worker.dead_letters WHERE \(queue)::text IS NULL OR queue = \(queue)
            GROUP BY queue, reason ORDER BY queue, count(*) DESC, reason
            """, logger: logger)
        var counts: [DeadLetterCount] = []
        for try await r in rows.decode((String, String, Int, Date).self) {
            counts.append(DeadLetterCount(queue: r.0, reason: r.1, count: r.2, newest: r.3))
        }
        return counts
    }
}
