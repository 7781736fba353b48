import Foundation
import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `workerctl jobs cancel` of a job a worker is running: the worker stops
/// it, rolls its batch back, and dead-letters it as cancelled.
@Suite(.timeLimit(.minutes(2))) struct CancelRunningTests {
    private static let policy = RetryPolicy(base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 3, maxAge: nil)

    @Test func aRunningJobIsStoppedItsBatchRollsBackAndItsBatchMatesRunAgain() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let started = Gate()
            let stopped = Mutex(false)
            let write: RecordingHandler.Body = { job, context in
                try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
            }
            // Writes its effect and waits for an hour: only a cancel ends it, and its effect must not stay.
            let hang = RecordingHandler { job, context in
                try await write(job, context)
                started.open()
                do { try await Task.sleep(for: .seconds(3600)) } catch { stopped.withLock { $0 = true }; throw error }
            }
            let quick = RecordingHandler(write)
            var handlers = HandlerRegistry.testing(quick, kinds: ["a.quick"], policy: Self.policy)
            handlers.register("b.hang", hang, policy: Self.policy)
            // One batch in lock order: the quick jobs write their effects first, then the hang.
            let quickJobs = try await db.queue.enqueue(NewJob(kind: "a.quick"), count: 2)
            let hung = try await db.queue.enqueue(NewJob(kind: "b.hang"))

            let totals = try await withWorker(db, handlers, WorkerConfiguration(concurrency: 1, batchSize: 10, workerID: "w")) { _ in
                try await eventually("the listener") { try await db.listenerHearsCancelRequests() }
                await started.wait()
                let jobs = QueuedJobs(client: db.client, logger: db.logger)
                let filter = JobFilter(ids: [hung], enqueuedBy: try await DatabaseClock.now(db.client, logger: db.logger))
                #expect(try await jobs.cancel(filter, limit: 10, note: "-").isEmpty, "its row is its worker's")
                let result = try await jobs.cancelRunning(
                    filter, limit: 10, leased: [], note: "cancelled with workerctl: stuck", wait: .seconds(60))
                #expect(result.cancelled == [hung] && result.finished.isEmpty && result.stillRunning.isEmpty, "\(result)")
                try await eventually("its batch-mates done") { try await db.jobCount() == 0 }
            }
            let letter = try #require(try await db.deadLetters.show(id: hung))
            #expect(letter.reason == "cancelled" && letter.lastError == "cancelled with workerctl: stuck", "\(letter)")
            #expect(letter.attempts == 1 && hang.invocations.count == 1)
            #expect(stopped.withLock { $0 }, "the handler's task was cancelled")
            // The batch's transaction rolled back: the hang's effect is gone, each quick job's is there once.
            #expect(try await db.int("SELECT count(*)::int FROM effects WHERE job_id = \(hung)") == 0)
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 2)
            #expect(quickJobs.allSatisfy { quick.invocations(of: $0) == 2 }, "run, rolled back, run again")
            #expect(totals.done == 2 && totals.deadLettered == 1 && totals.released == 2, "\(totals)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.cancel_requests") == 0, "withdrawn")
        }
    }

    @Test func aJobWaitingItsTurnGoesWithoutRunningAndItsBatchGoesOn() async throws {
        try await withTestDatabase { db in
            let started = Gate(), release = Gate()
            let slow = RecordingHandler { _, _ in
                started.open()
                await release.wait()
            }
            let quick = RecordingHandler()
            var handlers = HandlerRegistry.testing(quick, kinds: ["b.quick"], policy: Self.policy)
            handlers.register("a.slow", slow, policy: Self.policy)
            let running = try await db.queue.enqueue(NewJob(kind: "a.slow"))
            let waiting = try await db.queue.enqueue(NewJob(kind: "b.quick"))
            let other = try await db.queue.enqueue(NewJob(kind: "b.quick"))
            let log = LogRecorder()

            let totals = try await withWorker(
                db, handlers, WorkerConfiguration(concurrency: 1, batchSize: 10, workerID: "w"), logger: log.logger()
            ) { _ in
                try await eventually("the listener") { try await db.listenerHearsCancelRequests() }
                await started.wait()
                try await CancelRequests(client: db.client, logger: db.logger)
                    .request([waiting], note: "cancelled with workerctl: late", for: .seconds(60))
                try await eventually("the request read") {
                    log.recorded.contains { $0.message == "cancel requested" && $0.metadata["job_ids"] == "[\(waiting)]" }
                }
                release.open()
                try await eventually("the batch finished") { try await db.jobCount() == 0 }
            }
            let letter = try #require(try await db.deadLetters.show(id: waiting))
            #expect(letter.reason == "cancelled" && letter.lastError == "cancelled with workerctl: late", "\(letter)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE id <> \(waiting)") == 0)
            // In its turn, in the same batch, which was not abandoned: nothing ran twice or was released.
            #expect(slow.invocations.count == 1 && quick.invocations.map(\.id) == [other])
            #expect(totals.done == 2 && totals.deadLettered == 1 && totals.released == 0, "\(totals)")
        }
    }

    @Test func aNotificationWithoutARequestStopsNothing() async throws {
        try await withTestDatabase { db in
            let started = Mutex<Set<Int64>>([]), stopped = Mutex<Set<Int64>>([])
            let hang = RecordingHandler { job, _ in
                started.withLock { _ = $0.insert(job.id) }
                do { try await Task.sleep(for: .seconds(3600)) } catch { stopped.withLock { _ = $0.insert(job.id) }; throw error }
            }
            let jobs = try await db.queue.enqueue(NewJob(kind: "test"), count: 2)
            let (named, target) = (jobs.lowerBound, jobs.upperBound)
            // Two lanes of one job each, whose deadlines one ticker checks at the same ticks.
            try await withWorker(db, .testing(hang, policy: Self.policy), WorkerConfiguration(
                concurrency: 2, batchSize: 1, workerID: "w")
            ) { _ in
                try await eventually("the listener") { try await db.listenerHearsCancelRequests() }
                try await eventually("both jobs running") { started.withLock { $0.count } == 2 }
                // Anyone may NOTIFY: without a request, the worker looks and does nothing.
                try await db.execute("SELECT pg_notify('worker_cancel', \("\(named)"))")
                // Read after it (one channel, in order): once its lane stopped `target`, the
                // tick that did would have stopped `named` too, had the bare notification counted.
                try await CancelRequests(client: db.client, logger: db.logger)
                    .request([target], note: "cancelled with workerctl", for: .seconds(60))
                try await eventually("the target dead-lettered") {
                    try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE id = \(target)") == 1
                }
                #expect(stopped.withLock { $0 } == [target])
                #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(named)") == 1)
                // A request does stop it, and lets the worker stop.
                try await CancelRequests(client: db.client, logger: db.logger)
                    .request([named], note: "cancelled with workerctl", for: .seconds(60))
                try await eventually("both dead-lettered") { try await db.jobCount() == 0 }
            }
        }
    }

    @Test func aRequestEndsWithItsWaitAndOnlyOperatorsMayWriteOne() async throws {
        try await withTestDatabase { db in
            let requests = CancelRequests(client: db.client, logger: db.logger)
            try await requests.request([1, 2], note: "n", for: .seconds(60))
            try await db.execute("UPDATE worker.cancel_requests SET expires_at = now() - interval '1 second' WHERE job_id = 2")
            #expect(try await requests.notes(for: [1, 2, 3]) == [1: "n"], "an expired request is not acted on")
            try await requests.withdraw([1])
            #expect(try await db.int("SELECT count(*)::int FROM worker.cancel_requests") == 0, "the expired one went too")
            #expect(CancelRequests.jobIDs(in: "4,x,5,") == [4, 5])

            let grants = try await db.string("""
                SELECT string_agg(grantee || ':' || privilege_type, ' ' ORDER BY grantee, privilege_type)
                FROM information_schema.role_table_grants
                WHERE table_schema = 'worker' AND table_name = 'cancel_requests' AND grantee LIKE 'worker\\_%'
                """)
            #expect(grants == "worker_admin:DELETE worker_admin:INSERT worker_admin:SELECT worker_admin:UPDATE worker_consumer:SELECT")
        }
    }
}
