import Foundation
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// A statement of a batch that the database refuses for what one job holds
/// costs that job its attempt, not its batch-mates theirs.
@Suite(.timeLimit(.minutes(2))) struct RefusedStatementTests {
    /// Derives, for a payload marked poison, an idempotency key too long for
    /// the key table's index (random, so that it does not compress).
    struct PoisonKeyHandler: JobHandler {
        let recorder = RecordingHandler(idempotencyTTL: .seconds(60))
        var idempotencyTTL: Duration? { .seconds(60) }

        func handle(_ job: Job, context: JobContext) async throws -> JobResult {
            try await recorder.handle(job, context: context)
        }

        func idempotencyKey(for job: Job) -> String? {
            job.payload.contains("poison") ? (0..<100).map { _ in UUID().uuidString }.joined() : nil
        }
    }

    @Test func aJobWhoseStatementIsRefusedFailsAloneAndItsBatchMatesFinishInTheirFirstAttempt() async throws {
        try await withTestDatabase { db in
            for n in 0..<10 {
                _ = try await db.queue.enqueue(NewJob(kind: "test", payload: n == 5 ? #"{"poison": true}"# : #"{"n": \#(n)}"#))
            }
            let handler = PoisonKeyHandler()
            // One lane and leases longer than the test: a batch left to its leases' expiry would fail it.
            let worker = Worker(
                client: db.client, configuration: WorkerConfiguration(concurrency: 1, batchSize: 10, visibilityTimeout: .seconds(600)),
                handlers: .testing(handler), logger: db.logger)
            try await runUntilDrained([worker], db, "the batch to be run again one job at a time")

            #expect(handler.recorder.invocations.count == 9)
            #expect(Set(handler.recorder.invocations.map(\.payload)).count == 9)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 9)
            // Past an index's row size is refused every time: dead at once, with the server's words.
            #expect(try await db.string("SELECT reason || ' ' || attempts || ' ' || last_error FROM worker.dead_letters")
                    .hasPrefix("non_retryable 1 the database refused a statement of its batch: index row size"))
        }
    }

    /// When every job is refused, nothing says the jobs are at fault rather
    /// than something all of them meet (an operator's trigger, a migration's
    /// bug): each attempt fails as a retry, leaving time to fix it, and only
    /// running out of attempts dead-letters them, with the server's words.
    @Test func jobsAllRefusedAreRetriedNotDeadLetteredAtOnce() async throws {
        try await withTestDatabase { db in
            for n in 0..<3 { _ = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"poison": \#(n)}"#)) }
            let worker = Worker(
                client: db.client, configuration: WorkerConfiguration(concurrency: 1, batchSize: 10, visibilityTimeout: .seconds(600)),
                handlers: .testing(PoisonKeyHandler()), logger: db.logger)
            try await runUntilDrained([worker], db, "every job to run out of attempts")
            let letters = try await db.int("""
                SELECT count(*)::int FROM worker.dead_letters
                WHERE reason = 'max_attempts' AND attempts = 3 AND last_error LIKE '%index row size%'
                  AND jsonb_array_length(errors) = 3
                """)
            #expect(letters == 3)
        }
    }
}
