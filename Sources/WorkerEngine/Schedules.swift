import Foundation
import Logging
import PostgresNIO

/// A recurring job in `worker.schedules`.
public struct Schedule: Sendable, Equatable, Encodable {
    public var name: String
    /// Five cron fields (see `CronExpression`), read on `timeZone`'s clock.
    public var cron: String
    /// An IANA time zone name: `UTC`, `Europe/Berlin`.
    public var timeZone: String
    public var queue: String
    public var kind: String
    @JSONColumn public var payload: String
    public var priority: Int
    public var maxAttempts: Int?
    public var nextRunAt: Date?
    public var lastRunAt: Date?
    /// Why a worker could not read the cron or the time zone; the schedule waits for a fix.
    public var error: String?
    public var paused: Bool
    /// A run is skipped while the last run's job still waits to be claimed:
    /// its jobs carry the job key `schedule:NAME:RUN_KEY` (sql/027).
    public var skipWhileWaiting: Bool

    public init(
        name: String, cron: String, timeZone: String = "UTC", queue: String = "default", kind: String,
        payload: String = "{}", priority: Int = 0, maxAttempts: Int? = nil, nextRunAt: Date? = nil,
        lastRunAt: Date? = nil, error: String? = nil, paused: Bool = false, skipWhileWaiting: Bool = false
    ) {
        self.name = name
        self.cron = cron
        self.timeZone = timeZone
        self.queue = queue
        self.kind = kind
        self.payload = payload
        self.priority = priority
        self.maxAttempts = maxAttempts
        self.nextRunAt = nextRunAt
        self.lastRunAt = lastRunAt
        self.error = error
        self.paused = paused
        self.skipWhileWaiting = skipWhileWaiting
    }
}

/// What one look at the due schedules did.
public struct ScheduledRuns: Sendable {
    /// Runs enqueued: the schedule, its run's time and the job.
    public var enqueued: [(name: String, runAt: Date, jobID: Int64)] = []
    /// Runs skipped while the schedule's last job waited: the schedule and the run's time.
    public var skipped: [(name: String, runAt: Date)] = []
    /// Schedules found broken: their name and why.
    public var broken: [(name: String, error: String)] = []

    public var isEmpty: Bool { enqueued.isEmpty && skipped.isEmpty && broken.isEmpty }
}

/// The `worker.schedules` table: recurring jobs, enqueued by whichever worker
/// looks first.
public struct Schedules: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Enqueues a job for each schedule whose run is due and moves its next
    /// run on; gives a new schedule its first run. Runs missed while no
    /// worker ran (all of the fleet down) collapse into one: the next run is
    /// the first after now. Many workers may call this at once: each run is
    /// enqueued by one, whose write of `next_run_at` is conditional on the
    /// value it read.
    ///
    /// On a live connection (see `withLiveConnection`): a worker's stop
    /// cancels it, and a statement on a dead link must not hold that up.
    public func enqueueDue(limit: Int = 100) async throws -> ScheduledRuns {
        let logger = logger
        return try await client.withLiveConnection { connection in
            try await Self.enqueueDue(limit: limit, on: connection, logger: logger)
        }
    }

    private static func enqueueDue(limit: Int, on connection: PostgresConnection, logger: Logger) async throws -> ScheduledRuns {
        var due: [(name: String, cron: String, timeZone: String, runAt: Date?)] = []
        var now = Date()
        let rows = try await connection.query(
            """
            SELECT name, cron, time_zone, next_run_at, now() FROM worker.schedules
            WHERE NOT paused AND error IS NULL AND (next_run_at IS NULL OR next_run_at <= now())
            ORDER BY next_run_at NULLS FIRST, name LIMIT \(limit)
            """, logger: logger)
        for try await (name, cron, timeZone, runAt, clock) in rows.decode((String, String, String, Date?, Date).self) {
            due.append((name, cron, timeZone, runAt))
            now = clock
        }
        var runs = ScheduledRuns()
        // A statement per schedule: runs come a minute apart at most.
        for schedule in due {
            var next: Date?
            var problem: String?
            do { next = try nextRun(of: schedule.cron, in: schedule.timeZone, after: now) } catch {
                problem = error.description
            }
            let key = schedule.runAt.map { idempotencyKey(schedule: schedule.name, runAt: $0) }
            // A skipping schedule whose last run's job still waits (under the
            // key only this schedule's rows know) moves its next run on and
            // enqueues nothing; its last run stays the last one enqueued.
            let written = try await connection.query(
                """
                WITH waiting AS (
                    SELECT EXISTS (
                        SELECT FROM worker.schedules AS s JOIN worker.jobs AS j
                          ON j.queue = s.queue AND j.kind = s.kind AND j.job_key = \(unescaped: Self.jobKeySQL)
                        WHERE s.name = \(schedule.name) AND s.skip_while_waiting) AS skips
                ), moved AS (
                    UPDATE worker.schedules AS s
                    SET next_run_at = \(next), error = \(problem),
                        last_run_at = CASE WHEN \(key)::text IS NULL OR \(problem)::text IS NOT NULL
                                                OR (SELECT skips FROM waiting) THEN s.last_run_at
                                           ELSE s.next_run_at END
                    WHERE s.name = \(schedule.name) AND s.cron = \(schedule.cron) AND s.time_zone = \(schedule.timeZone)
                      AND s.next_run_at IS NOT DISTINCT FROM \(schedule.runAt) AND NOT s.paused AND s.error IS NULL
                    RETURNING s.queue, s.kind, s.payload, s.priority, s.max_attempts,
                              CASE WHEN s.skip_while_waiting THEN \(unescaped: Self.jobKeySQL) END AS job_key
                ), enqueued AS (
                    INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, max_attempts, job_key)
                    SELECT queue, kind, payload, \(key), priority, max_attempts, job_key FROM moved
                    WHERE \(key)::text IS NOT NULL AND \(problem)::text IS NULL AND NOT (SELECT skips FROM waiting)
                    -- A job of the key that came since this statement's snapshot: skipped all the same.
                    ON CONFLICT (queue, kind, job_key) WHERE job_key IS NOT NULL DO NOTHING
                    RETURNING id
                )
                SELECT (SELECT count(*) FROM moved)::int, (SELECT id FROM enqueued)
                """, logger: logger)
            for try await (moved, jobID) in written.decode((Int, Int64?).self) where moved == 1 {
                if let problem { runs.broken.append((schedule.name, problem)) }
                guard let runAt = schedule.runAt, problem == nil else { continue }
                if let jobID { runs.enqueued.append((schedule.name, runAt, jobID)) } else { runs.skipped.append((schedule.name, runAt)) }
            }
        }
        return runs
    }

    /// The idempotency key of a run's job: each run is its own event, though
    /// its payload is the same every time.
    public static func idempotencyKey(schedule: String, runAt: Date) -> String {
        "schedule:\(schedule):\(ISO8601DateFormatter().string(from: runAt))"
    }

    /// The job key of the runs of a schedule `s` that skips them while its
    /// last job waits (sql/027): with its run_key, which producers cannot read.
    static let jobKeySQL = "'schedule:' || s.name || ':' || s.run_key"

    /// The first run after `date`; throws when the cron does not parse, the
    /// time zone is unknown, or the cron names no time in the next eight years.
    public static func nextRun(of cron: String, in timeZone: String, after date: Date) throws(ScheduleError) -> Date {
        let expression: CronExpression
        do { expression = try CronExpression(cron) } catch { throw ScheduleError.badCron(error) }
        guard let zone = TimeZone(identifier: timeZone) else { throw ScheduleError.unknownTimeZone(timeZone) }
        guard let next = expression.next(after: date, in: zone) else { throw ScheduleError.neverRuns(cron: cron) }
        return next
    }

    public func list() async throws -> [Schedule] {
        let rows = try await client.query(
            """
            SELECT name, cron, time_zone, queue, kind, payload::text, priority, max_attempts, next_run_at, last_run_at,
                   error, paused, skip_while_waiting
            FROM worker.schedules ORDER BY name
            """, logger: logger)
        var schedules: [Schedule] = []
        for try await r in rows.decode(
            (String, String, String, String, String, String, Int16, Int?, Date?, Date?, String?, Bool, Bool).self)
        {
            schedules.append(Schedule(
                name: r.0, cron: r.1, timeZone: r.2, queue: r.3, kind: r.4, payload: r.5, priority: Int(r.6),
                maxAttempts: r.7, nextRunAt: r.8, lastRunAt: r.9, error: r.10, paused: r.11, skipWhileWaiting: r.12))
        }
        return schedules
    }

    /// Creates or replaces the schedule `schedule.name`, its first run the
    /// first its cron names after now (the database's clock); returns it as
    /// stored. A paused schedule stays paused.
    @discardableResult
    public func set(_ schedule: Schedule) async throws -> Schedule {
        let now = try await DatabaseClock.now(client, logger: logger)
        let next = try Self.nextRun(of: schedule.cron, in: schedule.timeZone, after: now)
        _ = try await client.query(
            """
            INSERT INTO worker.schedules AS s (name, cron, time_zone, queue, kind, payload, priority, max_attempts,
                                               next_run_at, skip_while_waiting)
            VALUES (\(schedule.name), \(schedule.cron), \(schedule.timeZone), \(schedule.queue), \(schedule.kind),
                    \(schedule.payload)::jsonb, \(schedule.priority)::smallint, \(schedule.maxAttempts)::integer, \(next),
                    \(schedule.skipWhileWaiting))
            ON CONFLICT (name) DO UPDATE SET
                cron = excluded.cron, time_zone = excluded.time_zone, queue = excluded.queue, kind = excluded.kind,
                payload = excluded.payload, priority = excluded.priority, max_attempts = excluded.max_attempts, next_run_at = excluded.next_run_at,
                skip_while_waiting = excluded.skip_while_waiting, error = NULL, updated_at = now()
            """, logger: logger)
        guard let stored = try await list().first(where: { $0.name == schedule.name }) else {
            throw PostgresWorkerError.unexpected("schedule '\(schedule.name)' vanished as it was set")
        }
        return stored
    }

    /// How many schedules wait for their cron or time zone to be fixed.
    public func brokenCount() async throws -> Int {
        let logger = logger
        return try await client.withLiveConnection { connection in
            for try await count in try await connection.query(
                "SELECT count(*)::int FROM worker.schedules WHERE error IS NOT NULL", logger: logger
            ).decode(Int.self) { return count }
            return 0
        }
    }

    /// Enqueues a run of the schedule now, paused or not, outside its cron:
    /// its next run stays as it was. The job's idempotency key is
    /// `schedule:NAME:manual:<now>`, so it is no duplicate of a cron run.
    /// Returns the job's id; `nil` if there is no such schedule.
    public func runNow(name: String) async throws -> Int64? {
        let rows = try await client.query(
            """
            INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, max_attempts)
            SELECT queue, kind, payload,
                   'schedule:' || name || ':manual:' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   priority, max_attempts
            FROM worker.schedules WHERE name = \(name)
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(Int64.self) { return id }
        return nil
    }

    /// Deletes the schedule; whether it existed. Jobs it enqueued stay.
    public func remove(name: String) async throws -> Bool {
        try await client.query("DELETE FROM worker.schedules WHERE name = \(name) RETURNING 1", logger: logger).hasRows()
    }

    /// Pauses the schedule, or resumes a paused one from its next run after
    /// now (a run missed while paused is not made up). Whether it changed;
    /// `nil` if there is no such schedule.
    public func setPaused(_ paused: Bool, name: String) async throws -> Bool? {
        let rows = try await client.query(
            """
            WITH changed AS (
                UPDATE worker.schedules SET paused = \(paused), updated_at = now(),
                    next_run_at = CASE WHEN \(paused) THEN next_run_at END
                WHERE name = \(name) AND paused <> \(paused) RETURNING 1
            )
            SELECT EXISTS (SELECT FROM changed) FROM worker.schedules WHERE name = \(name)
            """, logger: logger)
        for try await changed in rows.decode(Bool.self) { return changed }
        return nil
    }
}

/// A schedule whose cron cannot run.
public enum ScheduleError: Error, Equatable, CustomStringConvertible {
    case badCron(CronError)
    case unknownTimeZone(String)
    case neverRuns(cron: String)

    public var description: String {
        switch self {
        case .badCron(let error): "\(error)"
        case .unknownTimeZone(let name): "unknown time zone '\(name)' (an IANA name such as Europe/Berlin, or UTC)"
        case .neverRuns(let cron): "cron '\(cron)' names no time in the next eight years"
        }
    }
}
