import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

/// `workerctl jobs`: the queue's jobs as an operator sees and steers them.
@Suite(.timeLimit(.minutes(2))) struct JobCommandsTests {
    @Test func jobsAreListedByQueuePriorityAndDueTimeWithTheirStateAndShownWithTheirPayload() async throws {
        try await withTestDatabase { db in
            let ready = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", payload: #"{"n":1}"#, priority: 5), count: 2)
            let delayed = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", delay: .seconds(3600)))
            let urgent = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", priority: -1))
            _ = try await db.queue.claim(queue: "mail", limit: 1, visibilityTimeout: .seconds(60), workerID: "w-1")  // urgent

            let list = try await runTool("workerctl", ["jobs", "list", "--queue", "mail", "--json"], database: db)
            let jobs = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]], "\(list)")
            #expect(jobs.compactMap { $0["id"] as? Int } == [urgent, delayed, ready.lowerBound, ready.upperBound].map { Int($0) })
            #expect(jobs.compactMap { $0["state"] as? String } == ["in_flight", "delayed", "ready", "ready"])
            #expect(jobs.first?["leased_by"] as? String == "w-1" && jobs.first?["attempts"] as? Int == 1)

            let onlyDelayed = try await runTool("workerctl", ["jobs", "list", "--state", "delayed"], database: db)
            #expect(onlyDelayed.status == 0 && onlyDelayed.stdout.contains(" delayed "), "\(onlyDelayed)")
            #expect(onlyDelayed.stdout.split(separator: "\n").count == 2, "a header and one job: \(onlyDelayed)")

            let show = try await runTool("workerctl", ["jobs", "show", "\(ready.lowerBound)", "--json"], database: db)
            let job = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any], "\(show)")
            #expect((job["payload"] as? [String: Any])?["n"] as? Int == 1 && job["priority"] as? Int == 5, "\(show)")
            let table = try await runTool("workerctl", ["jobs", "show", "\(delayed)"], database: db)
            #expect(table.status == 0 && table.stdout.contains("state:           delayed"), "\(table)")

            let gone = try await runTool("workerctl", ["jobs", "show", "999999"], database: db)
            #expect(gone.status == 1 && gone.stderr.contains("no job with id 999999"), "\(gone)")
        }
    }

    @Test func cancelledJobsAreDeadLetteredWithTheReasonAndARedriveBringsThemBack() async throws {
        try await withTestDatabase { db in
            let ids = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 3)
            let other = try await db.queue.enqueue(NewJob(queue: "billing", kind: "test"))

            let dryRun = try await runTool("workerctl", ["jobs", "cancel", "--queue", "mail", "--dry-run"], database: db)
            #expect(dryRun.status == 0 && dryRun.stdout.contains("would cancel 3 jobs"), "\(dryRun)")
            #expect(try await db.jobCount() == 4)

            let one = try await runTool(
                "workerctl", ["jobs", "cancel", "--id", "\(ids.lowerBound)", "--reason", "sent twice"], database: db)
            #expect(one.status == 0 && one.stdout.contains("cancelled job \(ids.lowerBound)"), "\(one)")
            #expect(try await db.string(
                "SELECT reason || ' / ' || last_error FROM worker.dead_letters WHERE id = \(ids.lowerBound)")
                == "cancelled / cancelled with workerctl: sent twice")

            let rest = try await runTool("workerctl", ["jobs", "cancel", "--queue", "mail", "--json"], database: db)
            let result = try JSONSerialization.jsonObject(with: Data(rest.stdout.utf8)) as? [String: Any]
            #expect((result?["jobs"] as? [Int]) == [Int(ids.lowerBound) + 1, Int(ids.upperBound)], "\(rest)")
            #expect(try await db.jobCount() == 1)
            #expect(try await db.int("SELECT id::int FROM worker.jobs") == Int(other))

            let back = try await runTool("workerctl", ["redrive", "--reason", "cancelled"], database: db)
            #expect(back.status == 0 && back.stdout.contains("redrove 3 jobs"), "\(back)")
            #expect(try await db.jobCount() == 4)
            #expect(try await db.deadCount() == 0)
        }
    }

    @Test func aJobInItsProcessingTransactionIsLeftAndALeasedOneIsCancelledWithItsLease() async throws {
        try await withTestDatabase { db in
            let busy = try await db.queue.enqueue(NewJob(kind: "test"))
            let leased = try await db.queue.enqueue(NewJob(kind: "test"))
            let claimed = try await db.queue.claim(queue: "default", limit: 2, visibilityTimeout: .seconds(60), workerID: "w")
            #expect(claimed.map(\.id) == [busy, leased])

            // A worker's processing transaction holds `busy`'s row, as lock_jobs does.
            try await db.client.withConnection { connection in
                try await connection.query("BEGIN", logger: db.logger)
                try await connection.query("SELECT FROM worker.jobs WHERE id = \(busy) FOR UPDATE", logger: db.logger)
                let result = try await runTool("workerctl", ["jobs", "cancel", "--id", "\(busy)", "--id", "\(leased)"], database: db)
                #expect(result.status == 1 && result.stdout.contains("cancelled job \(leased)"), "\(result)")
                #expect(result.stderr.contains("not cancelled: \(busy)"), "\(result)")
                try await connection.query("ROLLBACK", logger: db.logger)
            }

            // The worker that leased `leased` is fenced out: its handler never runs, nothing of it commits.
            let handler = RecordingHandler()
            let outcomes = try await BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
                .process(claimed.filter { $0.id == leased })
            #expect(outcomes == [.leaseLost(jobID: leased)])
            #expect(handler.invocations.isEmpty)
            #expect(try await db.string("SELECT reason FROM worker.dead_letters WHERE id = \(leased)") == "cancelled")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(busy)") == 1)
        }
    }

    @Test func retryMakesDelayedJobsReadyWithTheirAttemptsAndLeavesTheOthers() async throws {
        try await withTestDatabase { db in
            let failing = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            let claimed = try await db.queue.claim(queue: "mail", limit: 1, visibilityTimeout: .seconds(60), workerID: "w")
            let slowRetry = RetryPolicy(base: .seconds(3600), rate: 2, cap: .seconds(7200), maxAttempts: 5, maxAge: nil)
            let handlers = HandlerRegistry.testing(RecordingHandler { _, _ in throw JobError.retryable("later") }, policy: slowRetry)
            _ = try await BatchProcessor(client: db.client, handlers: handlers, workerID: "w", logger: db.logger).process(claimed)
            let scheduled = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", delay: .seconds(3600)))
            let ready = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            let inFlight = try await db.queue.enqueue(NewJob(queue: "other", kind: "test"))
            _ = try await db.queue.claim(queue: "other", limit: 1, visibilityTimeout: .seconds(60), workerID: "w")

            let one = try await runTool("workerctl", ["jobs", "retry", "--id", "\(failing)"], database: db)
            #expect(one.status == 0 && one.stdout.contains("made 1 job ready"), "\(one)")
            #expect(try await db.string("SELECT (visible_at <= now())::text || ' ' || attempts FROM worker.jobs WHERE id = \(failing)")
                == "true 1")

            let all = try await runTool("workerctl", ["jobs", "retry", "--all", "--json"], database: db)
            let result = try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [String: Any]
            #expect((result?["jobs"] as? [Int]) == [Int(scheduled)], "only the delayed one: \(all)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(inFlight) AND lease_token IS NOT NULL AND visible_at > now()") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id IN (\(ready), \(scheduled)) AND visible_at <= now()") == 2)
        }
    }
}
