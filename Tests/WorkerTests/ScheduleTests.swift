import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `worker.schedules`: recurring jobs, each run enqueued once by the fleet.
@Suite(.timeLimit(.minutes(2))) struct ScheduleTests {
    /// Runs once a year, at a minute no test reaches: only `makeDue` makes
    /// its schedules due, whatever the time of day the tests run.
    static let yearly = "0 0 1 1 *"

    func components(of date: Date) -> DateComponents {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        return utc.dateComponents([.month, .day, .hour, .minute], from: date)
    }

    /// Makes the schedule's next run due: minute `run` of 2020 (a run each
    /// call, and long past).
    func makeDue(_ db: TestDatabase, _ name: String, run: Int = 0) async throws {
        try await db.execute("""
            UPDATE worker.schedules SET next_run_at = timestamptz '2020-01-01 00:00:00Z' + \(run) * interval '1 minute'
            WHERE name = \(name)
            """)
    }

    @Test func aDueScheduleEnqueuesItsJobOnceAndMovesItsNextRunOn() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            let set = try await schedules.set(Schedule(
                name: "nightly", cron: Self.yearly, queue: "reports", kind: "test", payload: #"{"report": "sales"}"#,
                priority: 3, maxAttempts: 2))
            let first = try #require(set.nextRunAt)
            let parts = components(of: first)
            #expect(first > Date() && [parts.month, parts.day, parts.hour, parts.minute] == [1, 1, 0, 0])
            #expect(try await schedules.enqueueDue().isEmpty, "not due yet")

            try await makeDue(db, "nightly")
            let due = try #require(try await schedules.list().first?.nextRunAt)
            let runs = try await schedules.enqueueDue()
            #expect(runs.enqueued.count == 1 && runs.enqueued.first?.name == "nightly" && runs.enqueued.first?.runAt == due)
            let job = try #require(runs.enqueued.first?.jobID)
            let key = Schedules.idempotencyKey(schedule: "nightly", runAt: due)
            #expect(key.hasPrefix("schedule:nightly:20"))
            #expect(try await db.string("""
                SELECT concat_ws(' ', queue, kind, payload->>'report', idempotency_key, priority, max_attempts)
                FROM worker.jobs WHERE id = \(job)
                """) == "reports test sales \(key) 3 2")

            let after = try #require(try await schedules.list().first)
            #expect(after.lastRunAt == due && after.nextRunAt == first, "the next run after now")
            #expect(try await schedules.enqueueDue().isEmpty, "the run is not enqueued twice")
            #expect(try await db.jobCount() == 1)
        }
    }

    @Test func aScheduleThatSkipsWhileWaitingKeepsOneJobWaitingUntilItIsClaimed() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            try await schedules.set(Schedule(name: "sync", cron: Self.yearly, queue: "sync", kind: "test", skipWhileWaiting: true))
            // A producer's job under the schedule's name is not the schedule's: its key has a part producers cannot read.
            try await db.execute("INSERT INTO worker.jobs (queue, kind, job_key, visible_at) VALUES ('sync', 'test', 'schedule:sync', 'infinity')")
            try await makeDue(db, "sync", run: 0)
            let job = try #require(try await schedules.enqueueDue().enqueued.first?.jobID)
            // The queue is behind: the next run finds the last one's job waiting.
            try await makeDue(db, "sync", run: 1)
            let skipped = try await schedules.enqueueDue()
            #expect(skipped.enqueued.isEmpty && skipped.skipped.map(\.name) == ["sync"], "\(skipped)")
            #expect(try await db.jobCount() == 2)
            let after = try #require(try await schedules.list().first)
            #expect(after.nextRunAt ?? .distantPast > Date(), "the skipped run moved the schedule on")
            #expect(after.lastRunAt == Date(timeIntervalSince1970: 1_577_836_800), "the last run is still the one enqueued")
            // Claimed, the job gives up its key: the next run is enqueued beside it.
            let claimed = try await db.queue.claim(queue: "sync", limit: 1, visibilityTimeout: .seconds(30), workerID: "w")
            #expect(claimed.map(\.id) == [job])
            try await makeDue(db, "sync", run: 2)
            let next = try #require(try await schedules.enqueueDue().enqueued.first?.jobID)
            #expect(next != job)
            // Without the flag, every run is enqueued.
            try await schedules.set(Schedule(name: "sync", cron: Self.yearly, queue: "sync", kind: "test"))
            try await makeDue(db, "sync", run: 3)
            #expect(try await schedules.enqueueDue().enqueued.count == 1)
            #expect(try await db.jobCount() == 4)
        }
    }

    @Test func workersLookingAtOnceEnqueueEachRunOnce() async throws {
        try await withTestDatabase(connections: 12) { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            for name in ["a", "b", "c"] {
                try await schedules.set(Schedule(name: name, cron: Self.yearly, kind: "test"))
            }
            for round in 1...5 {
                for name in ["a", "b", "c"] { try await makeDue(db, name, run: round) }
                let enqueued = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<8 { group.addTask { try await schedules.enqueueDue().enqueued.count } }
                    return try await group.reduce(0, +)
                }
                #expect(enqueued == 3, "round \(round)")
                #expect(try await db.jobCount() == 3 * round)
            }
            #expect(try await db.int("SELECT count(DISTINCT idempotency_key)::int FROM worker.jobs") == 15)
        }
    }

    @Test func setReplacesASchedulesDefinitionAndGivesItsNextRun() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            let first = try await schedules.set(Schedule(name: "s", cron: Self.yearly, kind: "test"))
            // Another text for the same times: the same next run, which the cron trigger must not reset.
            let second = try await schedules.set(Schedule(name: "s", cron: "0 0 1 jan *", queue: "q", kind: "other"))
            #expect(second.nextRunAt != nil && second.nextRunAt == first.nextRunAt)
            #expect(second.cron == "0 0 1 jan *" && second.queue == "q" && second.kind == "other")
            #expect(try await schedules.list().count == 1)
        }
    }

    @Test func runsMissedWhileNoWorkerRanCollapseIntoOne() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            // Due since 2020: six yearly runs missed.
            try await schedules.set(Schedule(name: "often", cron: Self.yearly, kind: "test"))
            try await makeDue(db, "often")
            #expect(try await schedules.enqueueDue().enqueued.count == 1)
            #expect(try await schedules.enqueueDue().enqueued.isEmpty)
            #expect(try await db.int("SELECT count(*)::int FROM worker.schedules WHERE next_run_at > now()") == 1)
        }
    }

    @Test func aScheduleInsertedBySQLGetsItsFirstRunAndABrokenCronWaitsForAFix() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            try await db.execute("INSERT INTO worker.schedules (name, cron, kind) VALUES ('sql', '0 0 1 1 *', 'test')")
            try await db.execute("INSERT INTO worker.schedules (name, cron, kind) VALUES ('typo', '61 * * * *', 'test')")
            let runs = try await schedules.enqueueDue()
            #expect(runs.enqueued.isEmpty, "a first run is computed, not run")
            #expect(runs.broken.map(\.name) == ["typo"])
            #expect(runs.broken.first?.error == "cron '61 * * * *': minute 61 is outside 0-59")
            var listed = try await schedules.list()
            #expect(listed.map(\.name) == ["sql", "typo"])
            #expect(listed[0].nextRunAt.map { components(of: $0).month == 1 && $0 > Date() } == true)
            #expect(listed[1].nextRunAt == nil && listed[1].error == runs.broken.first?.error)
            #expect(try await schedules.enqueueDue().isEmpty, "reported once, then left alone")

            try await db.execute("UPDATE worker.schedules SET cron = '0 0 1 1 *' WHERE name = 'typo'")
            #expect(try await schedules.list()[1].error == nil, "a new cron is read again")
            _ = try await schedules.enqueueDue()
            listed = try await schedules.list()
            #expect(listed[1].nextRunAt != nil && listed[1].error == nil)

            // A time zone too: a wrong one waits for a fix; a right one moves the run to its clock.
            try await db.execute("UPDATE worker.schedules SET time_zone = 'Mars/Olympus' WHERE name = 'sql'")
            #expect(try await schedules.list()[0].nextRunAt == nil, "a new zone is read again")
            #expect(try await schedules.enqueueDue().broken.map(\.error)
                    == ["unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin, or UTC)"])
            try await db.execute("UPDATE worker.schedules SET time_zone = 'Asia/Tokyo' WHERE name = 'sql'")
            _ = try await schedules.enqueueDue()
            listed = try await schedules.list()
            #expect(listed[0].error == nil && listed[0].timeZone == "Asia/Tokyo")
            #expect(listed[0].nextRunAt.map { components(of: $0) } == DateComponents(month: 12, day: 31, hour: 15, minute: 0),
                    "midnight of 1 January in Tokyo")
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func aPausedScheduleDoesNotRunAndResumesFromItsNextRun() async throws {
        try await withTestDatabase { db in
            let schedules = Schedules(client: db.client, logger: db.logger)
            try await schedules.set(Schedule(name: "s", cron: Self.yearly, kind: "test"))
            #expect(try await schedules.setPaused(false, name: "s") == false, "not paused")
            #expect(try await schedules.setPaused(true, name: "s") == true)
            #expect(try await schedules.setPaused(true, name: "s") == false, "already paused")
            try await makeDue(db, "s")
            #expect(try await schedules.enqueueDue().isEmpty)
            #expect(try await schedules.setPaused(false, name: "s") == true)
            #expect(try await schedules.enqueueDue().enqueued.isEmpty, "the run missed while paused is not made up")
            #expect(try await db.int("SELECT count(*)::int FROM worker.schedules WHERE next_run_at > now()") == 1)
            #expect(try await schedules.setPaused(true, name: "missing") == nil)
        }
    }

    @Test func aRunningWorkerEnqueuesAndRunsEachRunEvenWithTheSamePayload() async throws {
        try await withTestDatabase(connections: 12) { db in
            // Keys kept a day: had a run's key been its payload's hash, the second run would be a duplicate.
            let handler = RecordingHandler(idempotencyTTL: .seconds(86_400))
            let schedules = Schedules(client: db.client, logger: db.logger)
            try await schedules.set(Schedule(name: "tick", cron: Self.yearly, kind: "test", payload: #"{"same": true}"#))
            try await makeDue(db, "tick", run: 1)
            let config = WorkerConfiguration(concurrency: 2, workerID: "w")
            let totals = try await withWorker(db, .testing(handler), config) { _ in
                try await eventually("the worker to run the first run") { handler.invocations.count == 1 }
                try await makeDue(db, "tick", run: 2)
                try await eventually("the worker to run the second run") { handler.invocations.count == 2 }
            }
            #expect(totals.done == 2 && totals.duplicates == 0)
            let keys = handler.invocations.compactMap(\.idempotencyKey)
            #expect(keys.count == 2 && Set(keys).count == 2 && keys.allSatisfy { $0.hasPrefix("schedule:tick:") })
        }
    }

    @Test func workerctlSetsListsPausesAndRemovesSchedules() async throws {
        try await withTestDatabase { db in
            let set = try await runTool(
                "workerctl", ["schedules", "set", "nightly", "--cron", "0 2 * * MON-FRI", "--kind", "report.build",
                              "--queue", "reports", "--payload", #"{"days": 1}"#], database: db)
            #expect(set.status == 0 && set.stdout.contains("schedule 'nightly' set: report.build on queue reports, next run 20"), "\(set)")
            #expect(set.stdout.contains("T02:00:00Z"), "\(set)")

            let list = try await runTool("workerctl", ["schedules", "list", "--json"], database: db)
            let listed = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]], "\(list)")
            #expect(listed.first?["name"] as? String == "nightly" && listed.first?["cron"] as? String == "0 2 * * MON-FRI")
            #expect((listed.first?["payload"] as? [String: Any])?["days"] as? Int == 1 && listed.first?["paused"] as? Bool == false)

            let bad = try await runTool("workerctl", ["schedules", "set", "x", "--cron", "0 25 * * *", "--kind", "k"], database: db)
            #expect(bad.status == 64 && bad.stderr.contains("--cron: cron '0 25 * * *': hour 25 is outside 0-23"), "\(bad)")
            let zone = try await runTool(
                "workerctl", ["schedules", "set", "x", "--cron", "0 2 * * *", "--time-zone", "Europe/Berln", "--kind", "k"],
                database: db)
            #expect(zone.status == 64 && zone.stderr.contains("--time-zone: unknown time zone 'Europe/Berln'"), "\(zone)")
            let berlin = try await runTool(
                "workerctl", ["schedules", "set", "berlin", "--cron", "0 2 * * *", "--time-zone", "Europe/Berlin", "--kind", "k"],
                database: db)
            #expect(berlin.stdout.contains("T00:00:00Z") || berlin.stdout.contains("T01:00:00Z"), "02:00 in Berlin: \(berlin)")
            let zones = try await runTool("workerctl", ["schedules", "list"], database: db)
            #expect(zones.stdout.contains("Europe/Berlin") && zones.stdout.contains("TIME_ZONE"), "\(zones)")
            _ = try await runTool("workerctl", ["schedules", "remove", "berlin"], database: db)
            let never = try await runTool("workerctl", ["schedules", "set", "x", "--cron", "0 0 31 2 *", "--kind", "k"], database: db)
            #expect(never.status == 64 && never.stderr.contains("names no time in the next eight years"), "\(never)")

            let pause = try await runTool("workerctl", ["schedules", "pause", "nightly"], database: db)
            #expect(pause.status == 0, "\(pause)")
            let nextRun = try await Schedules(client: db.client, logger: db.logger).list().first?.nextRunAt
            let run = try await runTool("workerctl", ["schedules", "run", "nightly"], database: db)
            #expect(run.status == 0 && run.stdout.contains("enqueued job ") && run.stdout.contains("for schedule 'nightly'"), "\(run)")
            #expect(try await db.int("""
                SELECT count(*)::int FROM worker.jobs
                WHERE queue = 'reports' AND kind = 'report.build' AND payload = '{"days": 1}'
                  AND idempotency_key LIKE 'schedule:nightly:manual:%'
                """) == 1, "a run now, paused or not, with the schedule's definition")
            let nextRunAfter = try await Schedules(client: db.client, logger: db.logger).list().first?.nextRunAt
            #expect(nextRun != nil && nextRunAfter == nextRun, "the next run stays as it was")
            let noSuch = try await runTool("workerctl", ["schedules", "run", "nope"], database: db)
            #expect(noSuch.status == 1 && noSuch.stderr.contains("no schedule named 'nope'"), "\(noSuch)")
            let table = try await runTool("workerctl", ["schedules", "list"], database: db)
            #expect(table.stdout.split(separator: "\n").last?.hasSuffix("paused") == true, "\(table)")
            let resume = try await runTool("workerctl", ["schedules", "resume", "nightly"], database: db)
            #expect(resume.status == 0, "\(resume)")
            let skipping = try await runTool(
                "workerctl", ["schedules", "set", "sync", "--cron", "* * * * *", "--kind", "k", "--skip-while-waiting"], database: db)
            #expect(skipping.stdout.contains(", skipped while its last job waits"), "\(skipping)")
            let skipState = try await runTool("workerctl", ["schedules", "list"], database: db)
            #expect(skipState.stdout.split(separator: "\n").last?.hasSuffix("active,skip-while-waiting") == true, "\(skipState)")
            _ = try await runTool("workerctl", ["schedules", "remove", "sync"], database: db)
            let notPaused = try await runTool("workerctl", ["schedules", "resume", "nightly"], database: db)
            #expect(notPaused.status == 1 && notPaused.stderr.contains("schedule 'nightly' is not paused"), "\(notPaused)")

            let removed = try await runTool("workerctl", ["schedules", "remove", "nightly"], database: db)
            #expect(removed.status == 0 && removed.stdout.contains("removed schedule 'nightly'"), "\(removed)")
            let again = try await runTool("workerctl", ["schedules", "remove", "nightly"], database: db)
            #expect(again.status == 1 && again.stderr.contains("no schedule named 'nightly'"), "\(again)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.schedules") == 0)
        }
    }
}
