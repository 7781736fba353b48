import Foundation
import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct SweeperTests {
    func insertKeys(_ db: TestDatabase, live: Int, expired: Int) async throws {
        try await db.execute("""
            INSERT INTO worker.idempotency_keys (key, kind, job_id, payload_hash, status, expires_at)
            SELECT 'live-' || n, 'k', n, 'h', 'completed', now() + interval '1 hour' FROM generate_series(1, \(live)) AS n
            """)
        try await db.execute("""
            INSERT INTO worker.idempotency_keys (key, kind, job_id, payload_hash, status, expires_at)
            SELECT 'old-' || n, 'k', n, 'h', 'completed', now() - interval '1 second' FROM generate_series(1, \(expired)) AS n
            """)
    }

    @Test func expiredKeysAreDeletedInBatchesAndLiveOnesKept() async throws {
        try await withTestDatabase { db in
            try await insertKeys(db, live: 30, expired: 250)
            let report = try await IdempotencySweeper(client: db.client, logger: db.logger, batchSize: 100).sweep()
            #expect(report.deleted == 250 && !report.skipped)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys") == 30)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE key LIKE 'old-%'") == 0)
        }
    }

    @Test func concurrentSweepsDeleteEachKeyOnceAndOneMayStandAside() async throws {
        try await withTestDatabase { db in
            try await insertKeys(db, live: 5, expired: 3000)
            let reports = try await withThrowingTaskGroup(of: IdempotencySweeper.Report.self) { group in
                for _ in 0..<4 {
                    group.addTask { try await IdempotencySweeper(client: db.client, logger: db.logger, batchSize: 50).sweep() }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(reports.map(\.deleted).reduce(0, +) == 3000)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys") == 5)
        }
    }

    @Test func workerctlSweepsAndASweptKeyIsUsableAgain() async throws {
        try await withTestDatabase { db in
            try await insertKeys(db, live: 1, expired: 3)
            let sweep = try await runTool("workerctl", ["sweep"], database: db)
            #expect(sweep.status == 0 && sweep.stdout.contains("deleted 3 expired idempotency keys"), "\(sweep)")
            #expect(sweep.stderr.isEmpty, "the library's log line repeats the summary: \(sweep)")
            let bad = try await runTool("workerctl", ["sweep", "--batch-size", "0"], database: db)
            #expect(bad.status != 0 && bad.stderr.contains("--batch-size"), "\(bad)")

            let handler = RecordingHandler(idempotencyTTL: .seconds(60))
            _ = try await db.queue.enqueue(NewJob(kind: "test", idempotencyKey: "old-1"))
            let processor = BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
            let outcomes = try await processor.process(
                try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w"))
            #expect(outcomes.count == 1 && { if case .done = outcomes[0] { true } else { false } }())
            #expect(handler.invocations.count == 1)
        }
    }
}
