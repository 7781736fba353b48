import Foundation
import Synchronization
import Testing
import WorkerEngine
@testable import WorkerRuntime
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
                try await eventually("the listener") { try await db.listenerConnected() }
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
            // The worker dead-letters it, or the command does, polling, once the abandoned session let go of its row.
            #expect(totals.done == 2 && totals.deadLettered + totals.leaseLost == 1 && totals.released == 2, "\(totals)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.cancel_requests") == 0, "withdrawn")
        }
    }

    @Test func aJobWaitingItsTurnGoesWithoutRunningAndItsBatchGoesOn() async throws {
        try await withTestDatabase { db in
            let quick = RecordingHandler()
            let waiting = try await db.queue.enqueue(NewJob(kind: "b.quick"))
            let other = try await db.queue.enqueue(NewJob(kind: "b.quick"))
            let (totals, slowRuns) = try await cancelBehindASlowJob(
                db, .testing(quick, kinds: ["b.quick"], policy: Self.policy), cancelling: waiting, note: "cancelled with workerctl: late")
            let letter = try #require(try await db.deadLetters.show(id: waiting))
            #expect(letter.reason == "cancelled" && letter.lastError == "cancelled with workerctl: late", "\(letter)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE id <> \(waiting)") == 0)
            // In its turn, in the same batch, which was not abandoned: nothing ran twice or was released.
            #expect(slowRuns == 1 && quick.invocations.map(\.id) == [other])
            #expect(totals.done == 2 && totals.deadLettered == 1 && totals.released == 0, "\(totals)")
        }
    }

    /// Its batch-mate with the same key met it as the key's holder; once it is
    /// cancelled, the batch-mate claims the key itself and is processed.
    @Test func aJobCancelledInItsTurnLeavesItsKeyToABatchMateWithTheSameKey() async throws {
        try await withTestDatabase { db in
            let keyed = RecordingHandler(idempotencyTTL: .seconds(60))
            let first = try await db.queue.enqueue(NewJob(kind: "b.keyed", idempotencyKey: "k"))
            let second = try await db.queue.enqueue(NewJob(kind: "b.keyed", idempotencyKey: "k"))
            let (totals, _) = try await cancelBehindASlowJob(
                db, .testing(keyed, kinds: ["b.keyed"], policy: Self.policy), cancelling: first, note: "n")
            #expect(try await db.deadLetters.show(id: first)?.reason == "cancelled")
            #expect(keyed.invocations.map(\.id) == [second], "processed, not acked as a duplicate of the cancelled job")
            #expect(try await db.int("SELECT job_id::int FROM worker.idempotency_keys WHERE key = 'k'") == Int(second))
            #expect(totals.done == 2 && totals.duplicates == 0 && totals.deadLettered == 1, "\(totals)")
        }
    }

    /// A handler that writes nothing runs without a transaction: what its
    /// batch-mates did outside the database is done, and their acks are what
    /// the abandoned batch still owes.
    @Test func aBatchWithoutATransactionAcksWhatFinishedWhenOneOfItsJobsIsCancelled() async throws {
        try await withTestDatabase { db in
            let hangs = Gate()
            let handler = RecordingHandler(idempotencyTTL: nil, writesToDatabase: false) { job, _ in
                if job.payload.contains("fail") && job.attempts == 1 { throw JobError.retryable("once") }
                guard job.payload.contains("hang") else { return }
                hangs.open()
                try await Task.sleep(for: .seconds(3600))
            }
            let quick = try await db.queue.enqueue(NewJob(kind: "test"), count: 2)
            // Its retry is written at once (no transaction): the abandoned batch must not release it.
            let failing = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"fail": true}"#))
            let hung = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"hang": true}"#))
            let totals = try await withWorker(
                db, .testing(handler, policy: Self.policy), WorkerConfiguration(concurrency: 1, batchSize: 10, workerID: "w")
            ) { _ in
                try await eventually("the listener") { try await db.listenerConnected() }
                await hangs.wait()
                let jobs = QueuedJobs(client: db.client, logger: db.logger)
                let filter = JobFilter(ids: [hung], enqueuedBy: try await DatabaseClock.now(db.client, logger: db.logger))
                let moved = try await jobs.cancel(filter, limit: 10, note: "cancelled with workerctl")
                #expect(moved == [CancelledJob(id: hung, wasLeased: true)], "no row lock to skip it")
                _ = try await jobs.cancelRunning(filter, limit: 10, leased: [hung], note: "-", wait: .seconds(60))
                try await eventually("the batch settled") { try await db.jobCount() == 0 }
            }
            #expect(quick.allSatisfy { handler.invocations(of: $0) == 1 }, "not run again: \(handler.invocations.map(\.id))")
            #expect(handler.invocations(of: failing) == 2, "failed, then retried after its backoff")
            #expect(totals.done == 3 && totals.retried == 1 && totals.leaseLost == 1 && totals.released == 0, "\(totals)")
            #expect(try await db.deadLetters.show(id: hung)?.lastError == "cancelled with workerctl")
        }
    }

    @Test func aNoteHoldsForItsLeaseAndWhileItsRequestDoes() {
        func job(_ id: Int64) -> Job {
            Job(id: id, queue: "q", kind: "k", payload: "{}", idempotencyKey: nil, priority: 0, attempts: 1, maxAttempts: nil,
                createdAt: Date(), redriveCount: 0, lease: Lease(jobID: id, token: UUID()))
        }
        let (held, lapsing, forGood, other) = (job(1), job(2), job(3), job(4))
        let notes = CancelledJobs()
        notes.add([1: CancelNote(note: "a", lasting: .seconds(60)), 2: CancelNote(note: "b", lasting: .zero),
                   3: CancelNote(note: "c", lasting: nil), 4: CancelNote(note: "d", lasting: nil)],
                  held: [held.lease, lapsing.lease, forGood.lease])
        #expect(notes.notes(of: [held, lapsing, forGood, other]) == [1: "a", 3: "c"], "expired, or not held")
        var again = held
        again.lease = Lease(jobID: 1, token: UUID())
        #expect(notes.note(for: again) == nil, "a later claim of the same job (a redrive keeps the id)")
        notes.add([:], held: [forGood.lease])
        #expect(notes.note(for: held) == nil && notes.note(for: forGood) == "c", "a lease no longer held is dropped")
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
                try await eventually("the listener") { try await db.listenerConnected() }
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
            let mine = try await requests.request([1], note: "n", for: .seconds(60))
            let other = try await requests.request([1], note: "later", for: .seconds(120))
            try await requests.request([2], note: "left by a command stopped midway", for: .seconds(60))
            try await db.execute("UPDATE worker.cancel_requests SET expires_at = now() - interval '1 second' WHERE job_id = 2")
            let notes = try await requests.notes(for: [1, 2, 3])
            #expect(notes.mapValues(\.note) == [1: "later"], "the latest to expire; an expired one is not acted on")
            #expect(notes[1]?.lasting.map { $0 > .seconds(60) && $0 <= .seconds(120) } == true, "\(notes)")
            try await requests.withdraw(mine)
            #expect(try await db.string("SELECT string_agg(note, ',') FROM worker.cancel_requests") == "later",
                    "its own and the other command's expired one; not the other's live one")
            try await requests.withdraw(other)
            #expect(try await db.int("SELECT count(*)::int FROM worker.cancel_requests") == 0)
            #expect(CancelRequests.jobIDs(in: "4,x,5,") == [4, 5])

            let grants = try await db.string("""
                SELECT string_agg(grantee || ':' || privilege_type, ' ' ORDER BY grantee, privilege_type)
                FROM information_schema.role_table_grants
                WHERE table_schema = 'worker' AND table_name = 'cancel_requests' AND grantee LIKE 'worker\\_%'
                """)
            #expect(grants == "worker_admin:DELETE worker_admin:INSERT worker_admin:SELECT worker_admin:UPDATE worker_consumer:SELECT")
        }
    }

    /// Runs one worker lane over one batch: a slow job of kind `a.slow`
    /// (enqueued here, ahead of the batch's other jobs in lock order) holds
    /// the batch until the worker has read the request to cancel `job`, then
    /// lets it finish. Returns the worker's totals and the slow job's runs.
    private func cancelBehindASlowJob(
        _ db: TestDatabase, _ handlers: HandlerRegistry, cancelling job: Int64, note: String
    ) async throws -> (WorkerTotals, slowRuns: Int) {
        let started = Gate(), release = Gate()
        let slow = RecordingHandler { _, _ in
            started.open()
            await release.wait()
        }
        var handlers = handlers
        handlers.register("a.slow", slow, policy: Self.policy)
        try await db.queue.enqueue(NewJob(kind: "a.slow"))
        let log = LogRecorder()
        let totals = try await withWorker(
            db, handlers, WorkerConfiguration(concurrency: 1, batchSize: 10, workerID: "w"), logger: log.logger()
        ) { _ in
            try await eventually("the listener") { try await db.listenerConnected() }
            await started.wait()
            try await CancelRequests(client: db.client, logger: db.logger).request([job], note: note, for: .seconds(60))
            try await eventually("the request read") {
                log.recorded.contains { $0.message == "cancel requested" && $0.metadata["job_ids"] == "[\(job)]" }
            }
            release.open()
            try await eventually("the batch finished") { try await db.jobCount() == 0 }
        }
        return (totals, slow.invocations.count)
    }
}
