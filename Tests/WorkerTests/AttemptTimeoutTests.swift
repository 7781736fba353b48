import Foundation
import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `RetryPolicy.timeout`: an attempt that runs too long is abandoned with its
/// batch, fails as retryable, and the lane goes on.
@Suite(.timeLimit(.minutes(2))) struct AttemptTimeoutTests {
    @Test func anAttemptPastItsTimeoutFailsAndTheRestOfItsBatchRunsAgain() async throws {
        try await withTestDatabase { db in
            let quick = RecordingHandler()
            // Hangs until cancelled: the lane cancels it when it abandons the batch.
            let hang = RecordingHandler { _, _ in try await Task.sleep(for: .seconds(3600)) }
            var handlers = HandlerRegistry.testing(quick, kinds: ["quick"])
            handlers.register("hang", hang, policy: RetryPolicy(
                base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 2, maxAge: nil, timeout: .seconds(1)))
            // One batch: the quick jobs first (lower ids), then the one that hangs.
            let quickJobs = try await db.queue.enqueue(NewJob(kind: "quick"), count: 3)
            let hung = try await db.queue.enqueue(NewJob(kind: "hang"))

            let totals = try await withWorker(db, handlers, WorkerConfiguration(concurrency: 1, batchSize: 10, workerID: "w")) { _ in
                try await eventually(timeout: .seconds(60), "the hanging job dead-lettered and the rest done") {
                    try await db.jobCount() == 0
                }
            }
            let letter = try #require(try await db.deadLetters.show(id: hung))
            #expect(letter.reason == "max_attempts" && letter.attempts == 2, "\(letter)")
            #expect(letter.lastError == "timed out after 1s; its batch was abandoned", "\(letter)")
            #expect(letter.errors.components(separatedBy: "timed out after 1s").count - 1 == 2, "both attempts: \(letter.errors)")
            #expect(hang.invocations.count == 2)
            // Each quick job ran in every batch the hang abandoned, and was done once in the end.
            #expect(Set(quick.invocations.map(\.id)) == Set(quickJobs) && quick.invocations.count >= 3)
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters") == 1)
            #expect(totals.done == 3 && totals.deadLettered == 1 && totals.retried <= 1, "\(totals)")
        }
    }

    @Test func anAttemptStuckInAStatementIsAbandonedTooAndTheServerLetsGoOfItsRows() async throws {
        try await withTestDatabase { db in
            // Cancelling a task does not stop its statement: closing the connection does,
            // once the server sees it gone (client_connection_check_interval).
            let stuck = RecordingHandler { _, context in
                try await context.connection.query("SELECT pg_sleep(3600)", logger: context.logger)
            }
            let handlers = HandlerRegistry.testing(stuck, policy: RetryPolicy(
                base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 1, maxAge: nil, timeout: .seconds(1)))
            let job = try await db.queue.enqueue(NewJob(kind: "test"))
            try await withWorker(db, handlers, WorkerConfiguration(concurrency: 1, workerID: "w")) { _ in
                try await eventually(timeout: .seconds(60), "the stuck job dead-lettered") { try await db.jobCount() == 0 }
            }
            let letter = try #require(try await db.deadLetters.show(id: job))
            #expect(letter.reason == "max_attempts" && letter.lastError?.hasPrefix("timed out after 1s") == true, "\(letter)")
            // Its locks go before its pg_stat_activity row: a moment, not the hour of its statement.
            try await eventually("the server to end the abandoned statement") {
                try await db.int("SELECT count(*)::int FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3600)'") == 0
            }
        }
    }

    @Test func aBatchWithoutATransactionWritesNothingOnceAbandoned() async throws {
        try await withTestDatabase { db in
            // Writes nothing and keeps no key: its batch runs without a transaction, so
            // only the lane's care keeps the cancelled handler's failure from being written.
            let hang = RecordingHandler(idempotencyTTL: nil, writesToDatabase: false) { _, _ in
                try await Task.sleep(for: .seconds(3600))
            }
            let handlers = HandlerRegistry.testing(hang, policy: RetryPolicy(
                base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 1, maxAge: nil, timeout: .seconds(1)))
            let job = try await db.queue.enqueue(NewJob(kind: "test"))
            let totals = try await withWorker(db, handlers, WorkerConfiguration(concurrency: 1, workerID: "w")) { _ in
                try await eventually(timeout: .seconds(60), "the job dead-lettered") { try await db.jobCount() == 0 }
            }
            let letter = try #require(try await db.deadLetters.show(id: job))
            #expect(letter.lastError == "timed out after 1s; its batch was abandoned", "not the cancellation: \(letter)")
            #expect(totals.deadLettered == 1 && totals.leaseLost == 0, "\(totals)")
        }
    }

    @Test func aBatchHandlersCallPastItsTimeoutFailsEachOfItsJobs() async throws {
        try await withTestDatabase { db in
            let hang = HangingBatchHandler()
            let handlers = HandlerRegistry.testing(hang, policy: RetryPolicy(
                base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 1, maxAge: nil, timeout: .seconds(1)))
            let jobs = try await db.queue.enqueue(NewJob(kind: "test"), count: 3)
            let totals = try await withWorker(db, handlers, WorkerConfiguration(concurrency: 1, workerID: "w")) { _ in
                try await eventually(timeout: .seconds(60), "the batch's jobs dead-lettered") { try await db.jobCount() == 0 }
            }
            let letters = try await db.deadLetters.list(DeadLetterFilter(), limit: 10)
            #expect(Set(letters.map(\.id)) == Set(jobs), "every job of the call, not only its first: \(letters)")
            #expect(letters.allSatisfy { $0.lastError == "timed out after 1s; its batch was abandoned" })
            #expect(hang.calls.withLock { $0 } == 1 && totals.deadLettered == 3, "\(totals)")
        }
    }

    @Test func aTimeoutIsWrittenAsItsSettingWouldBe() {
        let text = { (timeout: Duration) in AttemptTimedOut(jobs: [], timeout: timeout, batch: []).description }
        #expect(text(.seconds(1800)) == "timed out after 30m; its batch was abandoned")
        #expect(text(.seconds(7200)).hasPrefix("timed out after 2h;") && text(.seconds(90)).hasPrefix("timed out after 90s;"))
        #expect(text(.milliseconds(1500)).hasPrefix("timed out after 1500ms;"))
    }
}

/// A batch handler whose call never returns until cancelled.
final class HangingBatchHandler: BatchJobHandler {
    let calls = Mutex(0)
    var idempotencyTTL: Duration? { nil }
    func handle(_ job: Job, context: JobContext) async throws -> JobResult { .empty }
    func handleBatch(_ jobs: [Job], context: JobContext) async throws -> [JobResult] {
        calls.withLock { $0 += 1 }
        try await Task.sleep(for: .seconds(3600))
        return jobs.map { _ in .empty }
    }
}
