import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

/// `workerctl jobs`: the queue's jobs as an operator sees and steers them.
@Suite(.timeLimit(.minutes(2))) struct JobCommandsTests {
    @Test func jobsAreListedByQueuePriorityAndDueTimeWithTheirStateAndShownWithTheirPayload() async throws {
        try await withTestDatabase { db in
            let ready = try await db.queue.enqueue(
                NewJob(queue: "mail", kind: "test", payload: #"{"n":1,"camelCase":2}"#, priority: 5), count: 2)
            let delayed = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", delay: .seconds(3600)))
            let urgent = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", priority: -1))
            _ = try await db.queue.claim(queue: "mail", limit: 1, visibilityTimeout: .seconds(60), workerID: "w-1")  // urgent
            let crashed = try await db.queue.enqueue(NewJob(queue: "other", kind: "test"))
            _ = try await db.queue.claim(queue: "other", limit: 1, visibilityTimeout: .seconds(60), workerID: "w-2")
            try await db.execute("UPDATE worker.jobs SET visible_at = now() - interval '1 second' WHERE id = \(crashed)")

            let list = try await runTool("workerctl", ["jobs", "list", "--queue", "mail", "--json"], database: db)
            let jobs = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]], "\(list)")
            #expect(jobs.compactMap { $0["id"] as? Int } == [urgent, delayed, ready.lowerBound, ready.upperBound].map { Int($0) })
            #expect(jobs.compactMap { $0["state"] as? String } == ["in_flight", "delayed", "ready", "ready"])
            #expect(jobs.first?["leased_by"] as? String == "w-1" && jobs.first?["attempts"] as? Int == 1)
            #expect(jobs.first?["leased_at"] is String && jobs.last?["leased_at"] == nil, "when its attempt began: \(list)")

            let expired = try await runTool("workerctl", ["jobs", "list", "--queue", "other", "--json"], database: db)
            let other = try JSONSerialization.jsonObject(with: Data(expired.stdout.utf8)) as? [[String: Any]]
            #expect(other?.first?["state"] as? String == "ready" && other?.first?["leased_by"] as? String == "w-2", "\(expired)")

            let onlyDelayed = try await runTool("workerctl", ["jobs", "list", "--state", "delayed"], database: db)
            #expect(onlyDelayed.status == 0 && onlyDelayed.stdout.contains(" delayed "), "\(onlyDelayed)")
            #expect(onlyDelayed.stdout.split(separator: "\n").count == 2, "a header and one job: \(onlyDelayed)")

            let show = try await runTool("workerctl", ["jobs", "show", "\(ready.lowerBound)", "--json"], database: db)
            let job = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any], "\(show)")
            let payload = job["payload"] as? [String: Any]
            #expect(payload?["n"] as? Int == 1 && payload?["camelCase"] as? Int == 2, "the payload as it is: \(show)")
            #expect(job["priority"] as? Int == 5 && job["redrive_count"] as? Int == 0, "\(show)")
            // Numbers as stored, not through Double: beyond Int64, and a long decimal.
            let big = try await db.queue.enqueue(NewJob(
                kind: "test", payload: #"{"cents": 123456789012345678901234567890, "rate": 0.1000000000000000000001}"#))
            let exact = try await runTool("workerctl", ["jobs", "show", "\(big)", "--json"], database: db)
            #expect(exact.stdout.contains("123456789012345678901234567890")
                    && exact.stdout.contains("0.1000000000000000000001"), "\(exact)")
            #expect(try JSONSerialization.jsonObject(with: Data(exact.stdout.utf8)) is [String: Any], "still JSON: \(exact)")
            let table = try await runTool("workerctl", ["jobs", "show", "\(delayed)"], database: db)
            #expect(table.status == 0 && table.stdout.contains("state:           delayed"), "\(table)")

            let gone = try await runTool("workerctl", ["jobs", "show", "999999"], database: db)
            #expect(gone.status == 1 && gone.stderr.contains("no job with id 999999"), "\(gone)")
        }
    }

    @Test func cancelledJobsAreDeadLetteredWithTheReasonAndARedriveBringsThemBack() async throws {
        try await withTestDatabase { db in
            let ids = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 2)
            let other = try await db.queue.enqueue(NewJob(queue: "billing", kind: "test"))
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", priority: -1))
            let failed = try await failNext(db, queue: "mail")  // delayed, with an error history

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
            #expect((result?["jobs"] as? [Int]) == [Int(ids.upperBound), Int(failed)], "\(rest)")
            #expect(try await db.string("""
                SELECT attempts || ' ' || jsonb_array_length(errors) || ' ' || (errors->0->>'error') || ' ' || (errors->1->>'cancelled')
                FROM worker.dead_letters WHERE id = \(failed)
                """) == "1 2 later cancelled with workerctl", "the failure kept, the cancel added")
            #expect(try await db.jobCount() == 1)
            #expect(try await db.int("SELECT id::int FROM worker.jobs") == Int(other))

            let back = try await runTool("workerctl", ["redrive", "--reason", "cancelled"], database: db)
            #expect(back.status == 0 && back.stdout.contains("redrove 3 jobs"), "\(back)")
            #expect(try await db.jobCount() == 4)
            #expect(try await db.deadCount() == 0)
            #expect(try await db.int("SELECT jsonb_array_length(errors) FROM worker.jobs WHERE id = \(failed)") == 3)
        }
    }

    @Test func anOperationInBatchesTakesOnlyJobsFromBeforeItStartedAndEachJobOnce() async throws {
        try await withTestDatabase { db in
            let early = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 2)
            let start = try await DatabaseClock.now(db.client, logger: db.logger)
            let late = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            let jobs = QueuedJobs(client: db.client, logger: db.logger)
            // The cursor of a second batch starts after the first's last id.
            let cancelled = try await jobs.cancel(
                JobFilter(queue: "mail", enqueuedBy: start, afterID: early.lowerBound), limit: 10, note: "test")
            #expect(cancelled.map(\.id) == [early.upperBound])
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id IN (\(early.lowerBound), \(late))") == 2)
        }
    }

    /// A handler that writes nothing runs outside a transaction: the command
    /// moves its job at once, and its worker, asked, stops the handler.
    @Test func aRunningJobIsStoppedByItsWorkerdAndItsLaneGoesOn() async throws {
        try await withTestDatabase { db in
            let slow = try await db.queue.enqueue(NewJob(kind: "demo.task", payload: #"{"work_ms": 60000}"#))
            let workerd = try ToolProcess("workerd", [
                "--concurrency", "1", "--batch-size", "1", "--worker-id", "cancel-test", "--log-level", "debug",
            ], environment: ["DATABASE_URL": db.url])
            defer { workerd.send(SIGKILL) }
            try await eventually("workerd to start the slow job") {
                workerd.stderrSoFar.split(separator: "\n").contains { $0.contains("job_id=\(slow) ") && $0.hasSuffix("job started") }
            }
            try await eventually("the listener") { try await db.listenerConnected() }
            let result = try await runTool("workerctl", ["jobs", "cancel", "--id", "\(slow)", "--reason", "stuck"], database: db)
            #expect(result.status == 0 && result.stdout.contains("cancelled job \(slow)"), "\(result)")
            #expect(try await db.string("SELECT reason || ' / ' || last_error FROM worker.dead_letters WHERE id = \(slow)")
                == "cancelled / cancelled with workerctl: stuck")
            // Its minute of work is cut short: the one lane takes the next job.
            try await eventually("the handler stopped") {
                workerd.stderrSoFar.contains("job cancelled while running; its batch was abandoned")
            }
            let next = try await db.queue.enqueue(NewJob(kind: "demo.task", payload: #"{"work_ms": 0}"#))
            try await eventually("the next job done") { try await db.jobCount() == 0 }
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE id = \(next)") == 0)
        }
    }

    /// A transaction other than a worker's holds `busy`: no worker stops it.
    @Test func aJobHeldByATransactionIsLeftAndALeasedOneIsCancelledWithItsLease() async throws {
        try await withTestDatabase { db in
            let busy = try await db.queue.enqueue(NewJob(kind: "test"))
            let leased = try await db.queue.enqueue(NewJob(kind: "test"))
            let quiet = try await db.queue.enqueue(NewJob(kind: "test"))
            let claimed = try await db.queue.claim(queue: "default", limit: 3, visibilityTimeout: .seconds(60), workerID: "w")
            #expect(claimed.map(\.id) == [busy, leased, quiet])

            // A worker's processing transaction holds `busy`'s row, as lock_jobs does.
            try await db.client.withConnection { connection in
                try await connection.query("BEGIN", logger: db.logger)
                try await connection.query("SELECT FROM worker.jobs WHERE id = \(busy) FOR UPDATE", logger: db.logger).drain()
                let result = try await runTool("workerctl", [
                    "jobs", "cancel", "--id", "\(busy)", "--id", "\(leased)", "--id", "\(quiet)", "--wait", "1s",
                ], database: db)
                #expect(result.status == 1 && result.stdout.contains("cancelled 2 jobs"), "\(result)")
                #expect(result.stderr.contains("not stopped within 1s, their requests withdrawn: \(busy) ("), "\(result)")
                #expect(result.stderr.contains("1 job is running; asked its worker to stop it and waiting up to 1s"), "\(result)")
                #expect(try await db.int("SELECT count(*)::int FROM worker.cancel_requests") == 0, "withdrawn")
                let json = try await runTool("workerctl", ["jobs", "cancel", "--id", "\(busy)", "--json", "--wait", "0"], database: db)
                let result2 = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
                #expect(json.status == 1 && (result2?["jobs"] as? [Int]) == [], "\(json)")
                #expect(json.stderr.contains("not cancelled: \(busy) (") && json.stderr.contains("being processed"), "\(json)")
                try await connection.query("ROLLBACK", logger: db.logger)
            }

            // The worker that leased `leased` is fenced out: its handler never runs, nothing of it commits.
            let handler = RecordingHandler()
            let processor = BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
            #expect(try await processor.process(claimed.filter { $0.id == leased }) == [.leaseLost(jobID: leased)])
            #expect(handler.invocations.isEmpty)
            // A handler that writes nothing runs without the lock: it runs, and its ack finds no row.
            let writesNothing = RecordingHandler(idempotencyTTL: nil, writesToDatabase: false)
            let lockless = BatchProcessor(client: db.client, handlers: .testing(writesNothing), workerID: "w", logger: db.logger)
            #expect(try await lockless.process(claimed.filter { $0.id == quiet }) == [.leaseLost(jobID: quiet)])
            #expect(writesNothing.invocations(of: quiet) == 1)

            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE reason = 'cancelled'") == 2)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(busy)") == 1)
        }
    }

    @Test func retryMakesJobsWaitingOutABackoffReadyWithTheirAttemptsAndLeavesTheOthers() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 2)
            let first = try await failNext(db, queue: "mail"), second = try await failNext(db, queue: "mail")
            let scheduled = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", delay: .seconds(3600)))
            let inFlight = try await db.queue.enqueue(NewJob(queue: "other", kind: "test"))
            _ = try await db.queue.claim(queue: "other", limit: 1, visibilityTimeout: .seconds(60), workerID: "w")

            let one = try await runTool("workerctl", ["jobs", "retry", "--id", "\(first)"], database: db)
            #expect(one.status == 0 && one.stdout.contains("made 1 job ready"), "\(one)")
            #expect(try await db.string("SELECT (visible_at <= now())::text || ' ' || attempts FROM worker.jobs WHERE id = \(first)")
                == "true 1")

            // The workers of the queue are woken, as an INSERT wakes them.
            let (all, woken) = try await db.client.withConnection { listener in
                try await listener.listen(on: "worker_jobs") { notifications in
                    let all = try await runTool("workerctl", ["jobs", "retry", "--all", "--json"], database: db)
                    for try await notification in notifications { return (all, notification.payload) }
                    return (all, "")
                }
            }
            let result = try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [String: Any]
            #expect((result?["jobs"] as? [Int]) == [Int(second)], "only the one waiting out its backoff: \(all)")
            #expect(woken == "mail")

            // A job waiting for its run_at is not a retry; asked for by id, it is named.
            let notARetry = try await runTool("workerctl", ["jobs", "retry", "--id", "\(scheduled)"], database: db)
            #expect(notARetry.status == 1 && notARetry.stderr.contains("not made ready: \(scheduled) ("), "\(notARetry)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(scheduled) AND visible_at > now()") == 1)
            // With --scheduled it runs now (River's JobRetry of a scheduled job); the job in flight is still left.
            let now = try await runTool("workerctl", ["jobs", "retry", "--all", "--scheduled"], database: db)
            #expect(now.status == 0 && now.stdout.contains("job \(scheduled) is ready") && now.stdout.contains("made 1 job ready"), "\(now)")
            #expect(try await db.string("SELECT (visible_at <= now())::text || ' ' || attempts FROM worker.jobs WHERE id = \(scheduled)")
                == "true 0")
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE id = \(inFlight) AND lease_token IS NOT NULL AND visible_at > now()") == 1)
        }
    }
}

/// Claims the next job of `queue` and fails it once, retryable: it is left
/// delayed, due in an hour. Returns its id.
private func failNext(_ db: TestDatabase, queue: String) async throws -> Int64 {
    let claimed = try await db.queue.claim(queue: queue, limit: 1, visibilityTimeout: .seconds(60), workerID: "w")
    let slow = RetryPolicy(base: .seconds(3600), rate: 2, cap: .seconds(3600), maxAttempts: 5, maxAge: nil)
    let handlers = HandlerRegistry.testing(RecordingHandler { _, _ in throw JobError.retryable("later") }, policy: slow)
    _ = try await BatchProcessor(client: db.client, handlers: handlers, workerID: "w", logger: db.logger).process(claimed)
    let id = try #require(claimed.first).id
    // The backoff is jittered: set the hour in full, so that it cannot come out near zero.
    try await db.execute("UPDATE worker.jobs SET visible_at = now() + interval '1 hour' WHERE id = \(id)")
    return id
}
