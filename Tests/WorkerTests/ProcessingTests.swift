import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerHandlers
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct ProcessingTests {
    func claimAll(_ db: TestDatabase, limit: Int = 50, worker: String = "w") async throws -> [Job] {
        try await db.queue.claim(queue: "default", limit: limit, visibilityTimeout: .seconds(30), workerID: worker)
    }

    func processor(_ db: TestDatabase, _ handlers: HandlerRegistry, worker: String = "w") -> BatchProcessor {
        BatchProcessor(client: db.client, handlers: handlers, workerID: worker, logger: db.logger)
    }

    @Test func eachJobOfABatchIsAckedOrFailedOnItsOwn() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let handler = RecordingHandler { job, context in
                try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
                if job.payload.contains("fail") { throw JobError.retryable("boom") }
            }
            for payload in [#"{"ok":1}"#, #"{"fail":1}"#, #"{"ok":2}"#, #"{"fail":2}"#, #"{"ok":3}"#] {
                try await db.queue.enqueue(NewJob(kind: "test", payload: payload))
            }
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.count == 3)
            #expect(outcomes.filter { if case .retried = $0 { true } else { false } }.count == 2)
            // Acked jobs are gone with their effects committed; failed ones stay, their effects rolled back.
            #expect(try await db.jobCount() == 2)
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 3)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE payload ? 'fail' AND last_error = 'boom' AND lease_token IS NULL") == 2)
        }
    }

    /// The payloads scripts/demo sends, read field by field from the parsed payload.
    @Test func demoTasksDoWhatTheirPayloadSays() async throws {
        try await withTestDatabase { db in
            var handlers = HandlerRegistry()
            handlers.register("demo.task", DemoHandler())
            let payloads = [
                #"{"work_ms": 1, "wave": 3}"#, #"{"work_ms": null}"#, #"{"poison": true}"#, #"{"fail_rate": 1}"#,
                #"{"work_ms": "soon"}"#, #"{"fail_rate": 2}"#,
            ]
            var ids: [Int64] = []
            for payload in payloads { ids.append(try await db.queue.enqueue(NewJob(kind: "demo.task", payload: payload))) }
            let outcomes = try await processor(db, handlers).process(try await claimAll(db))
            let byJob = Dictionary(uniqueKeysWithValues: outcomes.map { ($0.jobID, $0) })
            #expect(byJob[ids[0]] == .done(jobID: ids[0]))
            #expect(byJob[ids[1]] == .done(jobID: ids[1]))
            #expect(byJob[ids[2]] == .deadLettered(jobID: ids[2], reason: .nonRetryable))
            if case .retried? = byJob[ids[3]] {} else { Issue.record("fail_rate 1 did not retry: \(String(describing: byJob[ids[3]]))") }
            #expect(byJob[ids[4]] == .deadLettered(jobID: ids[4], reason: .invalidEvent))
            #expect(byJob[ids[5]] == .deadLettered(jobID: ids[5], reason: .invalidEvent))
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.dead_letters WHERE last_error LIKE '%work_ms is not an integer%'") == 1)
        }
    }

    /// A fast path that a later handler's failure abandons runs again
    /// guarded; what it did was rolled back, and so is what it would have
    /// logged: each outcome is logged once, after the commit, with its job.
    @Test func outcomesAreLoggedOnceWhenTheirTransactionCommits() async throws {
        try await withTestDatabase { db in
            let unknown = try await db.queue.enqueue(NewJob(kind: "nobody.handles.this"))
            _ = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"fail": true}"#))
            let handler = RecordingHandler { job, _ in if job.payload.contains("fail") { throw JobError.retryable("boom") } }
            let recorder = LogRecorder()
            let processor = BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: recorder.logger())
            _ = try await processor.process(try await claimAll(db))

            let dead = recorder.recorded.filter { $0.message == "job dead-lettered" }
            #expect(dead.count == 1 && dead.first?.metadata["job_id"] == "\(unknown)", "\(recorder.recorded)")
            #expect(recorder.recorded.filter { $0.message == "job failed, retrying" }.count == 1, "\(recorder.recorded)")
        }
    }

    @Test func aBatchWhoseHandlersAllSucceedRunsOnceAndStoresEveryKeysResult() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let handler = RecordingHandler(idempotencyTTL: .seconds(60)) { job, context in
                try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
            }
            for n in 1...3 { try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":\#(n)}"#)) }
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes.allSatisfy { if case .done = $0 { true } else { false } })
            #expect(handler.invocations.count == 3)
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 3)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 3)
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func aFailingHandlerMakesTheBatchRunAgainWithASavepointPerJob() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let handler = RecordingHandler(idempotencyTTL: .seconds(60)) { job, context in
                try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
                if job.payload.contains("fail") { throw JobError.retryable("boom") }
                if job.payload.contains("reject") { throw JobError.rejected("no") }
            }
            var ids: [Int64] = []
            for payload in [#"{"ok":1}"#, #"{"fail":1}"#, #"{"reject":1}"#, #"{"ok":2}"#] {
                ids.append(try await db.queue.enqueue(NewJob(kind: "test", payload: payload)))
            }
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.map(\.jobID) == [ids[0], ids[3]])
            #expect(outcomes.filter { if case .retried = $0 { true } else { false } }.map(\.jobID) == [ids[1]])
            #expect(outcomes.filter { if case .rejected = $0 { true } else { false } }.map(\.jobID) == [ids[2]])
            // The first run stopped at the failure and was rolled back; the second
            // ran the jobs again, except the failed one, whose failure it replayed:
            // a failing handler is called once per attempt.
            #expect(handler.invocations(of: ids[0]) == 2)
            #expect(handler.invocations(of: ids[1]) == 1)
            #expect(handler.invocations(of: ids[2]) == 1)
            #expect(handler.invocations(of: ids[3]) == 1)
            // Effects of the done jobs once; of the failed and rejected ones, none.
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 2)
            #expect(try await db.int("SELECT count(*)::int FROM effects WHERE job_id IN (\(ids[0]), \(ids[3]))") == 2)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 2)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'rejected'") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys") == 3)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE last_error = 'boom' AND lease_token IS NULL") == 1)
        }
    }

    @Test func jobsThatWriteNothingRunWithoutSavepointsAndStillSucceedOrFailAlone() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            // It says it writes nothing and writes anyway: with no savepoint
            // around it, the write of the failed attempt stays. That is what
            // shows the savepoints were skipped (and why the contract matters).
            let handler = RecordingHandler(idempotencyTTL: nil, writesToDatabase: false) { job, context in
                if job.payload.contains("sneaky") {
                    try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
                }
                if job.payload.contains("fail") { throw JobError.retryable("boom") }
                if job.payload.contains("reject") { throw JobError.rejected("no") }
            }
            for payload in [#"{"ok":1}"#, #"{"fail":1,"sneaky":1}"#, #"{"reject":1}"#, #"{"ok":2}"#] {
                try await db.queue.enqueue(NewJob(kind: "test", payload: payload))
            }
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.count == 2)
            #expect(outcomes.filter { if case .rejected = $0 { true } else { false } }.count == 1)
            #expect(outcomes.filter { if case .retried = $0 { true } else { false } }.count == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE payload ? 'fail' AND last_error = 'boom'") == 1)
            #expect(try await db.jobCount() == 1)
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 1)
        }
    }

    @Test func aKeyedJobThatWritesNothingKeepsItsRejectionForDuplicates() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler(idempotencyTTL: .seconds(60), writesToDatabase: false) { _, _ in
                throw JobError.rejected("not today")
            }
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":1}"#, idempotencyKey: "k1"))
            #expect(try await processor(db, .testing(handler)).process(try await claimAll(db)) == [.rejected(jobID: first)])
            let copy = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":1}"#, idempotencyKey: "k1"))
            #expect(try await processor(db, .testing(handler)).process(try await claimAll(db)) == [.duplicate(jobID: copy, of: first)])
            #expect(handler.invocations.count == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE key = 'k1' AND status = 'rejected'") == 1)
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func aZombieWhoseLeaseWasTakenOverCannotAckOrApplyEffects() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint, worker text)")
            let handler = RecordingHandler { job, context in
                try await context.connection.query(
                    "INSERT INTO effects VALUES (\(job.id), \(context.workerID))", logger: context.logger)
            }
            let id = try await db.queue.enqueue(NewJob(kind: "test"))
            // Worker A claims, then pauses past its lease.
            let zombieBatch = try await claimAll(db, worker: "A")
            try await db.makeAllDue()
            // Worker B claims the expired job and finishes it.
            let batchB = try await claimAll(db, worker: "B")
            #expect(batchB.map(\.id) == [id])
            #expect(try await processor(db, .testing(handler), worker: "B").process(batchB) == [.done(jobID: id)])
            // A wakes up and tries to finish with its old token.
            #expect(try await processor(db, .testing(handler), worker: "A").process(zombieBatch) == [.leaseLost(jobID: id)])
            #expect(handler.invocations(of: id) == 1)
            let workers = try await db.int("SELECT count(*)::int FROM effects WHERE worker = 'B'")
            let all = try await db.int("SELECT count(*)::int FROM effects")
            #expect(workers == 1 && all == 1)
        }
    }

    @Test func aZombieCannotAckAJobReclaimedBeforeItProcesses() async throws {
        // Same race, the other order: B holds the new lease but has not finished.
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let id = try await db.queue.enqueue(NewJob(kind: "test"))
            let zombieBatch = try await claimAll(db, worker: "A")
            try await db.makeAllDue()
            let batchB = try await claimAll(db, worker: "B")
            #expect(try await processor(db, .testing(handler), worker: "A").process(zombieBatch) == [.leaseLost(jobID: id)])
            #expect(try await db.jobCount() == 1)
            #expect(try await processor(db, .testing(handler), worker: "B").process(batchB) == [.done(jobID: id)])
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func aZombieCannotAckRescheduleOrDeadLetterJobsThatRunWithoutTheBatchLock() async throws {
        // Jobs that write nothing need no transaction and are not locked: the
        // lease token in each statement is what keeps a zombie out.
        try await withTestDatabase { db in
            let handler = RecordingHandler(idempotencyTTL: nil, writesToDatabase: false) { job, _ in
                if job.payload.contains("retry") { throw JobError.retryable("boom") }
                if job.payload.contains("fatal") { throw JobError.nonRetryable("bad") }
            }
            let done = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"ok":1}"#))
            let retried = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"retry":1}"#))
            let fatal = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"fatal":1}"#))
            let zombieBatch = try await claimAll(db, worker: "A")
            try await db.makeAllDue()
            var batchB: [Job] = []
            for _ in 0..<3 { batchB += try await claimAll(db, worker: "B") }  // expired leases: a claim each
            #expect(batchB.count == 3)
            #expect(try await processor(db, .testing(handler), worker: "A").process(zombieBatch) == [
                .leaseLost(jobID: done), .leaseLost(jobID: retried), .leaseLost(jobID: fatal),
            ])
            // B's leases are as B took them.
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE leased_by = 'B' AND attempts = 2 AND NOT errors::text ~ 'boom|bad'") == 3)
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters") == 0)
            let outcomes = try await processor(db, .testing(handler), worker: "B").process(batchB)
            #expect(outcomes.map(\.jobID) == [done, retried, fatal])
            #expect(outcomes[0] == .done(jobID: done) && outcomes[2] == .deadLettered(jobID: fatal, reason: .nonRetryable))
        }
    }

    @Test func aFailedAttemptIsCountedWhenTheWorkerStopsBeforeTheRerun() async throws {
        try await withTestDatabase { db in
            // The failure abandons the run without savepoints; the worker
            // begins to stop before the run with a savepoint per job.
            let handler = RecordingHandler { job, _ in
                if job.payload.contains("fail") { throw JobError.retryable("boom") }
            }
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"ok":1}"#))
            let failing = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"fail":1}"#))
            let started = Counter()
            let outcomes = try await processor(db, .testing(handler)).process(
                try await claimAll(db), shouldStart: { started.increment() <= 2 })
            #expect(outcomes.count == 2 && outcomes.last == .released(jobID: first), "\(outcomes)")
            if case .retried(failing, _)? = outcomes.first {} else { Issue.record("the failure was not recorded: \(outcomes)") }
            #expect(handler.invocations(of: failing) == 1)
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE id = \(failing) AND attempts = 1 AND last_error = 'boom'") == 1)
            #expect(try await db.int("SELECT attempts FROM worker.jobs WHERE id = \(first)") == 0)
        }
    }

    @Test func aJobReachesTheDeadLetterTableAfterExactlyMaxAttempts() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { _, _ in throw JobError.retryable("still down") }
            let id = try await db.queue.enqueue(NewJob(kind: "test", maxAttempts: 4))
            for attempt in 1...4 {
                try await db.makeAllDue()
                let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
                if attempt < 4 {
                    guard case .retried = outcomes.first else { Issue.record("attempt \(attempt): \(outcomes)"); return }
                } else {
                    #expect(outcomes == [.deadLettered(jobID: id, reason: .maxAttempts)])
                }
            }
            #expect(handler.invocations(of: id) == 4)
            #expect(try await db.jobCount() == 0)
            let letter = try #require(try await db.deadLetters.show(id: id))
            #expect(letter.reason == "max_attempts")
            #expect(letter.attempts == 4)
            #expect(letter.lastError == "still down")
            #expect(try await db.int("SELECT jsonb_array_length(errors)::int FROM worker.dead_letters WHERE id = \(id)") == 4)
        }
    }

    @Test func aJobThatCrashesItsWorkerEveryTimeStillReachesTheDeadLetterTable() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let id = try await db.queue.enqueue(NewJob(kind: "test", maxAttempts: 3))
            // Three claims whose workers die before finishing: only the claim's attempt count survives.
            for _ in 1...3 {
                try await db.makeAllDue()
                #expect(try await claimAll(db).count == 1)
            }
            try await db.makeAllDue()
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes == [.deadLettered(jobID: id, reason: .maxAttempts)])
            #expect(handler.invocations.isEmpty)
            let letter = try #require(try await db.deadLetters.show(id: id))
            #expect(letter.attempts == 3)
            #expect(letter.lastError?.hasPrefix("lease expired") == true)
        }
    }

    @Test func aJobThatCrashesItsWorkerDoesNotSpendItsBatchMatesAttempts() async throws {
        try await withTestDatabase { db in
            let poison = try await db.queue.enqueue(NewJob(kind: "test", maxAttempts: 3))
            let others = try await db.queue.enqueue(NewJob(kind: "test", maxAttempts: 3), count: 4)
            let handler = RecordingHandler()
            for _ in 0..<12 {
                let batch = try await claimAll(db)
                if batch.isEmpty { break }
                if let job = batch.first(where: { $0.id == poison }), job.attempts <= 3 {
                    try await db.makeAllDue()  // its worker died with the whole batch
                    continue
                }
                _ = try await processor(db, .testing(handler)).process(batch)
            }
            #expect(try await db.jobCount() == 0)
            #expect(try await db.deadLetters.show(id: poison)?.reason == "max_attempts")
            #expect(try await db.deadCount() == 1)
            #expect(Set(handler.invocations.map(\.id)) == Set(others))
        }
    }

    @Test func nonRetryableErrorsAndInvalidEventsAreDeadLetteredAtOnce() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { job, _ in
                if job.payload.contains("declined") { throw JobError.nonRetryable("card declined") }
                throw JobError.invalidEvent("amount must be positive")
            }
            let declined = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"declined":true}"#))
            let invalid = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"amount":-1}"#))
            let unknown = try await db.queue.enqueue(NewJob(kind: "no.such.kind"))
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(Set(outcomes.map { "\($0)" }) == Set([
                JobOutcome.deadLettered(jobID: declined, reason: .nonRetryable),
                .deadLettered(jobID: invalid, reason: .invalidEvent),
                .deadLettered(jobID: unknown, reason: .invalidEvent),
            ].map { "\($0)" }))
            #expect(try await db.deadLetters.show(id: unknown)?.lastError == "unknown kind 'no.such.kind'")
            #expect(try await db.deadLetters.show(id: invalid)?.lastError == "amount must be positive")
            #expect(try await db.deadLetters.show(id: declined)?.attempts == 1)
        }
    }

    @Test func anyOtherErrorIsRetryable() async throws {
        struct Unexpected: Error {}
        try await withTestDatabase { db in
            let id = try await db.queue.enqueue(NewJob(kind: "test"))
            let outcomes = try await processor(db, .testing(RecordingHandler { _, _ in throw Unexpected() }))
                .process(try await claimAll(db))
            guard case .retried(id, _) = outcomes.first else { Issue.record("\(outcomes)"); return }
        }
    }

    @Test func aHandlerErrorThatAbortsTheTransactionFailsOnlyItsJob() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { job, context in
                if job.payload.contains("bad") {
                    try await context.connection.query("SELECT 1/0", logger: context.logger)
                }
            }
            try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"bad":1}"#))
            let good = try await db.queue.enqueue(NewJob(kind: "test"))
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes.last == .done(jobID: good))
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE last_error LIKE '%division by zero%' OR last_error LIKE '%PSQLError%'") == 1)
        }
    }

    @Test func jobsOlderThanTheMaxAgeExpireIntoTheDeadLetterTable() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let old = try await db.queue.enqueue(NewJob(kind: "test"))
            let fresh = try await db.queue.enqueue(NewJob(kind: "test"))
            try await db.execute("UPDATE worker.jobs SET created_at = now() - interval '2 hours' WHERE id = \(old)")
            let policy = RetryPolicy(base: .seconds(1), rate: 2, cap: .seconds(2), maxAttempts: 3, maxAge: .seconds(3600))
            let outcomes = try await processor(db, .testing(handler, policy: policy)).process(try await claimAll(db))
            #expect(outcomes == [.deadLettered(jobID: old, reason: .expired), .done(jobID: fresh)])
            #expect(handler.invocations.map(\.id) == [fresh])
        }
    }

    @Test func jobsNotStartedWhenTheWorkerStopsAreReleased() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let first = try await db.queue.enqueue(NewJob(kind: "test"))
            let second = try await db.queue.enqueue(NewJob(kind: "test"))
            let started = Counter()
            let outcomes = try await processor(db, .testing(handler)).process(
                try await claimAll(db), shouldStart: { started.increment() <= 1 })
            #expect(outcomes == [.done(jobID: first), .released(jobID: second)])
            let again = try await claimAll(db)
            #expect(again.map(\.id) == [second])
            #expect(again.first?.attempts == 1)
        }
    }

    @Test func keyedJobsNotStartedWhenTheWorkerStopsGiveTheirKeysBack() async throws {
        try await withTestDatabase { db in
            // The unguarded run claims every key of the batch before the first job.
            let handler = RecordingHandler(idempotencyTTL: .seconds(60))
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":1}"#))
            let second = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":2}"#))
            let started = Counter()
            let outcomes = try await processor(db, .testing(handler)).process(
                try await claimAll(db), shouldStart: { started.increment() <= 1 })
            #expect(outcomes == [.done(jobID: first), .released(jobID: second)])
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE job_id = \(second)") == 0)
            // Run again, the released job is done, not a duplicate of itself.
            #expect(try await processor(db, .testing(handler)).process(try await claimAll(db)) == [.done(jobID: second)])
            #expect(handler.invocations(of: second) == 1)
        }
    }

    @Test func aKeyTwiceInOneBatchGoesToTheFirstJob() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler(idempotencyTTL: .seconds(60))
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":1}"#, idempotencyKey: "k"))
            let copy = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":1}"#, idempotencyKey: "k"))
            let reuse = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":2}"#, idempotencyKey: "k"))
            let derived = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":3}"#))
            let derivedCopy = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":3}"#))
            let outcomes = try await processor(db, .testing(handler)).process(try await claimAll(db))
            #expect(outcomes == [
                .done(jobID: first), .duplicate(jobID: copy, of: first),
                .deadLettered(jobID: reuse, reason: .idempotencyConflict),
                .done(jobID: derived), .duplicate(jobID: derivedCopy, of: derived),
            ])
            #expect(handler.invocations.map(\.id) == [first, derived])
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 2)
        }
    }

    @Test func retriesWaitAJitteredDelayWithinThePolicyCeiling() async throws {
        try await withTestDatabase { db in
            let policy = RetryPolicy(base: .seconds(10), rate: 3, cap: .seconds(60), maxAttempts: 10, maxAge: nil)
            let handler = RecordingHandler { _, _ in throw JobError.retryable("again") }
            _ = try await db.queue.enqueue(NewJob(kind: "test"), count: 40)
            // Attempt 2: ceiling 10s * 3 = 30s, measured from the failure's own timestamp.
            try await db.execute("UPDATE worker.jobs SET attempts = 1")
            _ = try await processor(db, .testing(handler, policy: policy)).process(try await claimAll(db))
            let rows = try await db.client.query(
                "SELECT extract(epoch FROM visible_at - (errors->-1->>'at')::timestamptz)::float8 FROM worker.jobs", logger: db.logger)
            var delays: [Double] = []
            for try await delay in rows.decode(Double.self) { delays.append(delay) }
            #expect(delays.count == 40)
            #expect(delays.allSatisfy { $0 >= 0 && $0 <= 30 }, "\(delays.sorted())")
            #expect(Set(delays.map { Int($0) }).count > 5, "delays are jittered, not all equal")
        }
    }
}

/// A thread-safe counter for closures that must be `@Sendable`.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    var current: Int { value.withLock { $0 } }
}

import Synchronization
