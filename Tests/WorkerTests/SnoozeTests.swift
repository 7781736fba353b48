import Synchronization
import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct SnoozeTests {
    /// Writes an effect, then snoozes a job whose payload says so the first time it runs.
    func snoozingOnce() -> RecordingHandler {
        let snoozed = JobIDs()
        return RecordingHandler(idempotencyTTL: .seconds(3600)) { job, context in
            try await context.connection.query("INSERT INTO effects VALUES (\(job.id))", logger: context.logger)
            if job.payload.contains("snooze"), snoozed.insert(job.id) { throw JobError.snoozed(for: .seconds(3600), "not yet") }
        }
    }

    func process(_ db: TestDatabase, _ handler: any JobHandler) async throws -> [JobOutcome] {
        let jobs = try await db.queue.claim(queue: "default", limit: 50, visibilityTimeout: .seconds(30), workerID: "w")
        return try await BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
            .process(jobs)
    }

    @Test func aSnoozedJobIsPutOffWithoutSpendingAnAttemptOrLeavingItsWrites() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let handler = snoozingOnce()
            // One attempt only: were the snooze to spend it, the next claim would dead-letter the job.
            let snoozing = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"snooze": 1}"#, maxAttempts: 1))
            let other = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"ok": 1}"#))

            let outcomes = try await process(db, handler)
            #expect(outcomes.sorted { $0.jobID < $1.jobID }
                == [.snoozed(jobID: snoozing, delay: .seconds(3600)), .done(jobID: other)])
            // An hour off by the snooze's clock (the check runs seconds later under a loaded suite).
            #expect(try await db.int("""
                SELECT count(*)::int FROM worker.jobs WHERE id = \(snoozing) AND attempts = 0 AND lease_token IS NULL
                   AND leased_by IS NULL AND last_error IS NULL AND errors = '[]'
                   AND visible_at BETWEEN now() + interval '50 min' AND now() + interval '3601 s'
                """) == 1)
            // Its effect and its key were rolled back; its batch-mate's were not.
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM effects WHERE job_id = \(other)") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE job_id = \(snoozing)") == 0)

            try await db.makeAllDue()
            #expect(try await process(db, handler) == [.done(jobID: snoozing)])
            #expect(try await db.jobCount() == 0)
            #expect(try await db.deadCount() == 0)
            #expect(try await db.int("SELECT count(*)::int FROM effects WHERE job_id = \(snoozing)") == 1)
        }
    }

    @Test func aSnoozeLongerThanTwelveHoursIsCutToTwelve() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { _, _ in throw JobError.snoozed(for: .seconds(Int64.max / 1000), "a year or more") }
            let id = try await db.queue.enqueue(NewJob(kind: "test"))
            #expect(try await process(db, handler) == [.snoozed(jobID: id, delay: .seconds(12 * 3600))])
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE visible_at BETWEEN now() + interval '11 hours' AND now() + interval '12 hours 1 second'") == 1)
        }
    }

    @Test func aSnoozedHeadKeepsItsOrderingKey() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (job_id bigint PRIMARY KEY)")
            let handler = snoozingOnce()
            let head = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"snooze": 1}"#, orderingKey: "k"))
            let next = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"ok": 1}"#, orderingKey: "k"))

            #expect(try await process(db, handler) == [.snoozed(jobID: head, delay: .seconds(3600))])
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(next) AND visible_at = 'infinity'") == 1)

            try await db.execute("UPDATE worker.jobs SET visible_at = now() WHERE id = \(head)")
            #expect(try await process(db, handler) == [.done(jobID: head)])
            #expect(try await process(db, handler) == [.done(jobID: next)])
        }
    }
}

final class JobIDs: Sendable {
    private let ids = Mutex<Set<Int64>>([])
    /// Whether `id` was not in the set before.
    func insert(_ id: Int64) -> Bool { ids.withLock { $0.insert(id).inserted } }
}
