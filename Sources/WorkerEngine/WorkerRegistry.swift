import Foundation
import Logging
import PostgresNIO

/// What a `workerd` reports of itself to `worker.workers`.
public struct WorkerReport: Sendable, Equatable {
    public var workerID: String
    /// This process, drawn at its start.
    public var instance: UUID
    public var host: String
    public var pid: Int
    public var queues: [String]
    public var concurrency: Int
    public var batchSize: Int
    /// Jobs it holds leases on now.
    public var leases: Int
    /// Jobs it finished since it started.
    public var finished: Int
    /// A graceful stop has begun.
    public var stopping: Bool
    /// Its release (`ProductVersion.number`).
    public var version: String

    public init(
        workerID: String, instance: UUID, host: String, pid: Int, queues: [String], concurrency: Int, batchSize: Int, leases: Int,
        finished: Int, stopping: Bool, version: String = ProductVersion.number
    ) {
        self.workerID = workerID
        self.instance = instance
        self.host = host
        self.pid = pid
        self.queues = queues
        self.concurrency = concurrency
        self.batchSize = batchSize
        self.leases = leases
        self.finished = finished
        self.stopping = stopping
        self.version = version
    }
}

/// A worker of the fleet, as `workerctl workers` shows it.
public struct FleetWorker: Sendable, Equatable, Encodable {
    public enum State: String, Sendable, Codable {
        /// Reported within `WorkerRegistry.silenceBeforeGone`.
        case running
        /// Finishing what it holds after a graceful stop began.
        case stopping
        /// Not heard from for `WorkerRegistry.silenceBeforeGone`: killed,
        /// stalled or cut off from the database. Its leases expire by themselves.
        case gone
    }

    public var id: String
    public var host: String
    public var pid: Int
    /// Its release; `nil` for a worker older than the column.
    public var version: String?
    public var queues: [String]
    public var concurrency: Int
    public var batchSize: Int
    /// Leases held at its last report.
    public var leases: Int
    /// Jobs it finished since it started, at its last report.
    public var finished: Int
    /// Jobs it finished in the last minute (from `worker.throughput`), as
    /// `workerctl stats` counts them.
    public var doneLastMinute: Int
    public var startedAt: Date
    public var seenAt: Date
    /// Seconds since its last report, by the database's clock.
    public var silentSeconds: Double
    public var stoppingSince: Date?
    public var state: State
}

/// The `worker.workers` table: each `workerd`'s row, written by itself.
public struct WorkerRegistry: Sendable {
    /// How often a worker reports itself.
    public static let reportInterval: Duration = .seconds(10)
    /// A worker silent this long (three reports missed) is shown as gone.
    public static let silenceBeforeGone: Duration = .seconds(30)
    /// Rows unseen this long are deleted as workers report.
    public static let retention: Duration = .seconds(86_400)

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// A process on a host.
    public struct Process: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var pid: Int
        public init(host: String, pid: Int) {
            self.host = host
            self.pid = pid
        }
        public var description: String { "\(host):\(pid)" }
    }

    /// Writes `report` as its worker's row, and deletes rows past the
    /// retention. Returns the other instance's process whose row under the
    /// same worker id it replaced, if that one reported within `silenceBeforeGone` and
    /// had not begun to stop: either two workers share an id (and `workerctl
    /// jobs` can no longer tell their leases apart), or the other one died
    /// moments ago and was restarted under its id.
    @discardableResult
    public func report(_ report: WorkerReport) async throws -> Process? {
        let logger = logger
        return try await client.withLiveConnection { connection in
            let rows = try await connection.query(
                """
                WITH other AS (
                    SELECT host, pid FROM worker.workers
                    WHERE id = \(report.workerID) AND instance <> \(report.instance)
                      AND stopping_since IS NULL
                      AND seen_at > now() - \(Self.silenceBeforeGone.milliseconds)::bigint * interval '1 millisecond'
                ), written AS (
                    INSERT INTO worker.workers AS w (id, instance, host, pid, queues, concurrency, batch_size, leases, finished,
                                                   stopping_since, version)
                    VALUES (\(report.workerID), \(report.instance), \(report.host), \(report.pid), \(report.queues)::text[],
                            \(report.concurrency), \(report.batchSize), \(report.leases), \(report.finished),
                            CASE WHEN \(report.stopping) THEN now() END, \(report.version))
                    ON CONFLICT (id) DO UPDATE SET
                        instance = excluded.instance, host = excluded.host, pid = excluded.pid, queues = excluded.queues,
                        version = excluded.version,
                        concurrency = excluded.concurrency, batch_size = excluded.batch_size, leases = excluded.leases,
                        finished = excluded.finished,
                        started_at = CASE WHEN w.instance = excluded.instance THEN w.started_at ELSE now() END,
                        seen_at = now(),
                        stopping_since = CASE WHEN excluded.stopping_since IS NOT NULL
                                              THEN coalesce(w.stopping_since, now()) END
                ), pruned AS (
                    DELETE FROM worker.workers
                    WHERE seen_at < now() - \(Self.retention.milliseconds)::bigint * interval '1 millisecond'
                      AND id <> \(report.workerID)
                )
                SELECT host, pid FROM other
                """, logger: logger)
            for try await (host, pid) in rows.decode((String, Int).self) { return Process(host: host, pid: pid) }
            return nil
        }
    }

    /// Deletes the instance's row: it has stopped. A row another instance
    /// wrote under the same id since is left to it.
    public func remove(workerID: String, instance: UUID) async throws {
        let logger = logger
        try await client.withLiveConnection { connection in
            _ = try await connection.query(
                "DELETE FROM worker.workers WHERE id = \(workerID) AND instance = \(instance)", logger: logger)
        }
    }

    /// Every worker with a row: running first, then stopping, then gone; by id.
    public func list() async throws -> [FleetWorker] {
        let rows = try await client.query(
            """
            SELECT w.id, w.host, w.pid, w.version, w.queues, w.concurrency, w.batch_size, w.leases, w.finished,
                   coalesce((SELECT sum(t.done + t.duplicates + t.rejected + t.dead_lettered)::int
                             FROM worker.throughput AS t
                             WHERE t.worker_id = w.id AND t.bucket > now() - interval '1 minute'), 0),
                   w.started_at, w.seen_at, extract(epoch FROM now() - w.seen_at)::float8, w.stopping_since, s.state
            FROM worker.workers AS w
            CROSS JOIN LATERAL (SELECT CASE
                WHEN w.seen_at <= now() - \(Self.silenceBeforeGone.milliseconds)::bigint * interval '1 millisecond'
                    THEN 'gone'
                WHEN w.stopping_since IS NOT NULL THEN 'stopping'
                ELSE 'running' END AS state) AS s
            ORDER BY array_position(ARRAY['running', 'stopping', 'gone'], s.state), w.id
            """, logger: logger)
        var workers: [FleetWorker] = []
        for try await r in rows.decode(
            (String, String, Int, String?, [String], Int, Int, Int, Int, Int, Date, Date, Double, Date?, String).self)
        {
            guard let state = FleetWorker.State(rawValue: r.14) else {
                throw PostgresWorkerError.unexpected("worker state '\(r.14)'")
            }
            workers.append(FleetWorker(
                id: r.0, host: r.1, pid: r.2, version: r.3, queues: r.4, concurrency: r.5, batchSize: r.6, leases: r.7,
                finished: r.8, doneLastMinute: r.9, startedAt: r.10, seenAt: r.11, silentSeconds: r.12,
                stoppingSince: r.13, state: state))
        }
        return workers
    }
}
