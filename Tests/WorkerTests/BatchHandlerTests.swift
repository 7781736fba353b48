import Foundation
import PostgresNIO
import Synchronization
import Testing
import WorkerEngine
import WorkerTestSupport

/// How the batch's first run hands runs of jobs to a `BatchJobHandler`, and
/// where `handle` takes over.
@Suite(.timeLimit(.minutes(2))) struct BatchHandlerTests {
    func processAll(_ db: TestDatabase, _ handler: StoppingBatchHandler) async throws -> [JobOutcome] {
        let jobs = try await db.queue.claim(queue: "default", limit: 50, visibilityTimeout: .seconds(30), workerID: "w")
        return try await BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
            .process(jobs)
    }

    func results(_ db: TestDatabase) async throws -> [String] {
        let rows = try await db.client.query(
            "SELECT result->>'by' FROM worker.idempotency_keys ORDER BY job_id", logger: db.logger)
        var results: [String] = []
        for try await by in rows.decode(String.self) { results.append(by) }
        return results
    }

    @Test func aRunOfJobsGoesToOneCallAndTheJobWhereItStoppedToHandle() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (n int PRIMARY KEY)")
            var ids: [Int64] = []
            for n in 1...5 { ids.append(try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":\#(n)}"#))) }
            let handler = StoppingBatchHandler(stopAt: [3])
            let outcomes = try await processAll(db, handler)
            #expect(outcomes.map(\.jobID) == ids)
            #expect(outcomes.allSatisfy { if case .done = $0 { true } else { false } })
            // One call for all five, which did 1 and 2; job 3 alone; one call for 4 and 5.
            #expect(handler.batchCalls == [[1, 2, 3, 4, 5], [4, 5]])
            #expect(handler.singleCalls == [3])
            #expect(try await results(db) == ["batch", "batch", "handle", "batch", "batch"])
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 5)
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func aDuplicateSplitsTheRunAndIsAckedWithoutAnyCall() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (n int PRIMARY KEY)")
            for (n, key) in [(1, "a"), (1, "a"), (3, "c")] {
                try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":\#(n)}"#, idempotencyKey: key))
            }
            let handler = StoppingBatchHandler(stopAt: [])
            let outcomes = try await processAll(db, handler)
            #expect(outcomes.filter { if case .duplicate = $0 { true } else { false } }.count == 1)
            #expect(handler.batchCalls == [[1], [3]])
            #expect(handler.singleCalls.isEmpty)
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 2)
        }
    }

    @Test func aThrowingBatchCallRunsTheBatchAgainOneJobAtATime() async throws {
        try await withTestDatabase { db in
            try await db.execute("CREATE TABLE effects (n int PRIMARY KEY)")
            for n in 1...3 { try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n":\#(n)}"#)) }
            // Its effects are written before it throws: the rollback must take them.
            let handler = StoppingBatchHandler(stopAt: [], throwing: true)
            let outcomes = try await processAll(db, handler)
            #expect(outcomes.allSatisfy { if case .done = $0 { true } else { false } })
            #expect(handler.batchCalls == [[1, 2, 3]])
            #expect(handler.singleCalls == [1, 2, 3])
            #expect(try await results(db) == ["handle", "handle", "handle"])
            #expect(try await db.int("SELECT count(*)::int FROM effects") == 3)
        }
    }
}

/// Does its jobs' effects (a row per `n`) in one statement, stopping before
/// the first `n` of `stopAt`; records which `n`s each call was given.
final class StoppingBatchHandler: BatchJobHandler {
    let stopAt: Set<Int>
    let throwing: Bool
    private let calls = Mutex<(batches: [[Int]], singles: [Int])>(([], []))

    init(stopAt: Set<Int>, throwing: Bool = false) {
        self.stopAt = stopAt
        self.throwing = throwing
    }

    var idempotencyTTL: Duration? { .seconds(60) }
    var batchCalls: [[Int]] { calls.withLock { $0.batches } }
    var singleCalls: [Int] { calls.withLock { $0.singles } }

    struct Payload: Decodable { var n: Int }
    static func n(of job: Job) throws -> Int { try JSONDecoder().decode(Payload.self, from: Data(job.payload.utf8)).n }
    struct Thrown: Error {}

    func handleBatch(_ jobs: [Job], context: JobContext) async throws -> [JobResult] {
        let ns = try jobs.map { try Self.n(of: $0) }
        calls.withLock { $0.batches.append(ns) }
        let done = throwing ? ns : Array(ns.prefix { !stopAt.contains($0) })
        try await context.connection.query("INSERT INTO effects SELECT unnest(\(done))", logger: context.logger)
        if throwing { throw Thrown() }
        return done.map { _ in JobResult(json: #"{"by":"batch"}"#) }
    }

    func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        let n = try Self.n(of: job)
        calls.withLock { $0.singles.append(n) }
        try await context.connection.query("INSERT INTO effects VALUES (\(n))", logger: context.logger)
        return JobResult(json: #"{"by":"handle"}"#)
    }
}
