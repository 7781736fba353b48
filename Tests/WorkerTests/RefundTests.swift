import Foundation
import Testing
import WorkerEngine
import WorkerHandlers
import WorkerRuntime
import WorkerTestSupport

/// Refund events through the idempotency table: effects exactly once.
@Suite(.timeLimit(.minutes(2))) struct RefundTests {
    let handlers = HandlerRegistry.standard()

    func refund(_ id: String, payment: String = "pay_1", cents: Int = 500, currency: String = "EUR") -> String {
        #"{"refund_id": "\#(id)", "payment_id": "\#(payment)", "amount_cents": \#(cents), "currency": "\#(currency)"}"#
    }

    func pay(_ db: TestDatabase, _ id: String = "pay_1", cents: Int = 10_000, currency: String = "EUR") async throws {
        try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES (\(id), \(cents), \(currency))")
    }

    /// Claims and processes every ready job, one batch at a time, in id order.
    @discardableResult
    func processAll(_ db: TestDatabase, batchSize: Int = 1) async throws -> [JobOutcome] {
        var outcomes: [JobOutcome] = []
        while true {
            let jobs = try await db.queue.claim(queue: "default", limit: batchSize, visibilityTimeout: .seconds(30), workerID: "w")
            guard !jobs.isEmpty else { return outcomes }
            outcomes += try await BatchProcessor(client: db.client, handlers: handlers, workerID: "w", logger: db.logger).process(jobs)
        }
    }

    func refunded(_ db: TestDatabase, _ payment: String = "pay_1") async throws -> Int {
        try await db.int("SELECT refunded_cents::int FROM app.payments WHERE id = \(payment)")
    }

    /// Concurrent batches must lock shared payments in one order, or they
    /// deadlock: a batch runs its refunds by payment, then refund id.
    @Test func aBatchRunsItsJobsInLockOrderNotInIdOrder() async throws {
        try await withTestDatabase { db in
            try await pay(db, "pay_a")
            try await pay(db, "pay_b")
            var ids: [String: Int64] = [:]
            for (refundID, payment) in [("rf_2", "pay_b"), ("rf_1", "pay_b"), ("rf_3", "pay_a")] {
                ids[refundID] = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund(refundID, payment: payment)))
            }
            _ = try await db.queue.enqueue(NewJob(kind: "noop"))
            let jobs = try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
            let outcomes = try await BatchProcessor(client: db.client, handlers: handlers, workerID: "w", logger: db.logger).process(jobs)
            #expect(outcomes.map(\.jobID) == [jobs[3].id, ids["rf_3"]!, ids["rf_1"]!, ids["rf_2"]!])
        }
    }

    @Test func fiftyConcurrentCopiesOfARefundApplyItOnce() async throws {
        try await withTestDatabase(connections: 4 * WorkerConfiguration(concurrency: 4).connectionsNeeded) { db in
            try await pay(db)
            let event = refund("rf_1")
            try await withThrowingTaskGroup(of: Void.self) { producers in
                for _ in 0..<50 {
                    producers.addTask { _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: event)) }
                }
                try await producers.waitForAll()
            }
            // Four workers, each with four lanes of one-job batches: many transactions race for the key.
            let workers = (0..<4).map { n in
                Worker(client: db.client, configuration: WorkerConfiguration(concurrency: 4, batchSize: 1, workerID: "w\(n)"),
                       handlers: handlers, logger: db.logger)
            }
            try await runUntilDrained(workers, db, "every copy to be handled")
            #expect(try await refunded(db) == 500)
            #expect(try await db.int("SELECT count(*)::int FROM app.refunds") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE key = 'refund:rf_1' AND status = 'completed'") == 1)
            #expect(try await db.deadCount() == 0)
            let totals = workers.map(\.totals)
            #expect(totals.map(\.done).reduce(0, +) == 1)
            #expect(totals.map(\.duplicates).reduce(0, +) == 49)
        }
    }

    @Test func concurrentDifferentRefundsOfOnePaymentNeverRefundBeyondIt() async throws {
        try await withTestDatabase(connections: 4 * WorkerConfiguration(concurrency: 3).connectionsNeeded) { db in
            try await pay(db, cents: 1000)
            for n in 0..<20 {
                _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_\(n)", cents: 100)))
            }
            // Workers with batches of one and of five: the set-based path and the per-event one race for the payment.
            let workers = (0..<4).map { n in
                Worker(client: db.client, configuration: WorkerConfiguration(concurrency: 3, batchSize: n % 2 == 0 ? 1 : 5, workerID: "w\(n)"),
                       handlers: handlers, logger: db.logger)
            }
            try await runUntilDrained(workers, db, "every refund to be handled")
            #expect(try await refunded(db) == 1000)
            #expect(try await db.int("SELECT count(*)::int FROM app.refunds") == 10)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 10)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'rejected'") == 10)
            #expect(try await db.deadCount() == 0)
        }
    }

    @Test func theSameRefundUnderAnotherKeyGetsTheFirstOnesResult() async throws {
        try await withTestDatabase { db in
            try await pay(db)
            try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_1"), idempotencyKey: "a"))
            try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_1"), idempotencyKey: "b"))
            let outcomes = try await processAll(db)
            #expect(outcomes.allSatisfy { if case .done = $0 { true } else { false } })
            #expect(try await refunded(db) == 500)
            #expect(try await db.int("SELECT count(*)::int FROM app.refunds") == 1)
            #expect(try await db.int("SELECT count(DISTINCT result)::int FROM worker.idempotency_keys WHERE key IN ('a', 'b')") == 1)
        }
    }

    @Test func aKeyReusedWithAnotherPayloadIsDeadLettered() async throws {
        try await withTestDatabase { db in
            try await pay(db)
            try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_1"), idempotencyKey: "k"))
            let reused = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_2", cents: 700), idempotencyKey: "k"))
            try await processAll(db)
            #expect(try await refunded(db) == 500)
            let letter = try #require(try await db.deadLetters.show(id: reused))
            #expect(letter.reason == "idempotency_conflict")
            #expect(letter.lastError?.contains("idempotency key 'k' is held by job") == true)
        }
    }

    @Test func refundsBeyondThePaymentOrOfUnknownPaymentsAreRejectedOnceAndRecorded() async throws {
        try await withTestDatabase { db in
            try await pay(db, cents: 1000)
            let cases: [(String, String)] = [
                (refund("rf_ok", cents: 800), "applied"),
                (refund("rf_over", cents: 300), "exceeds the 200 left of payment pay_1"),
                (refund("rf_nobody", payment: "pay_404"), "unknown payment pay_404"),
                (refund("rf_usd", cents: 100, currency: "USD"), "is in EUR, not USD"),
            ]
            for (payload, _) in cases { try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: payload)) }
            let outcomes = try await processAll(db)
            #expect(outcomes.filter { if case .rejected = $0 { true } else { false } }.count == 3)
            #expect(try await refunded(db) == 800)
            #expect(try await db.int("SELECT count(*)::int FROM app.refunds") == 1)
            #expect(try await db.jobCount() == 0)
            #expect(try await db.deadCount() == 0)
            for (payload, expected) in cases {
                let id = payload.split(separator: "\"")[3]
                let result = try await db.string("SELECT status || ' ' || result::text FROM worker.idempotency_keys WHERE key = \("refund:\(id)")")
                #expect(result.contains(expected), "\(id): \(result)")
            }
            // Rejections are visible to operators.
            let stats = try await runTool("workerctl", ["stats"], database: db)
            let row = stats.stdout.split(separator: "\n").first { $0.hasPrefix("refund.requested") }
            // KIND DONE/MIN RETRIED/MIN DEAD/MIN COMPLETED REJECTED EXPIRED_KEYS
            #expect(row?.split(separator: " ").suffix(3) == ["1", "3", "0"], "\(stats)")
        }
    }

    /// A batch's refunds are applied by one call, which stops at a refund it
    /// cannot simply apply; the per-event path answers that one.
    @Test func aBatchOfRefundsGivesTheSameAnswersAsOneAtATime() async throws {
        try await withTestDatabase { db in
            try await pay(db, cents: 1000)
            let events: [(String, String?)] = [
                (refund("rf_a", cents: 300), nil), (refund("rf_b", cents: 200), "x"), (refund("rf_b", cents: 200), "y"),
                (refund("rf_over", cents: 900), nil), (refund("rf_nobody", payment: "pay_404"), nil),
                (refund("rf_c", cents: 100), nil),
            ]
            for (payload, key) in events {
                try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: payload, idempotencyKey: key))
            }
            let outcomes = try await processAll(db, batchSize: 50)
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.count == 4)
            #expect(outcomes.filter { if case .rejected = $0 { true } else { false } }.count == 2)
            #expect(try await refunded(db) == 600)
            #expect(try await db.int("SELECT count(*)::int FROM app.refunds") == 3)
            #expect(try await db.string("SELECT status FROM app.payments WHERE id = 'pay_1'") == "partially_refunded")
            // rf_b under its second key gets the first one's answer.
            #expect(try await db.int("SELECT count(DISTINCT result)::int FROM worker.idempotency_keys WHERE key IN ('x', 'y')") == 1)
            let over = try await db.string("SELECT result::text FROM worker.idempotency_keys WHERE key = 'refund:rf_over'")
            #expect(over.contains("exceeds the 400 left of payment pay_1"), "\(over)")
            let c = try await db.string("SELECT result->>'refunded_total_cents' FROM worker.idempotency_keys WHERE key = 'refund:rf_c'")
            #expect(c == "600")
        }
    }

    @Test func aRefundRejectedOnceStaysRejectedForItsDuplicates() async throws {
        try await withTestDatabase { db in
            try await pay(db, cents: 100)
            for _ in 0..<2 { try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_big"))) }
            let outcomes = try await processAll(db)
            #expect(outcomes.count == 2)
            guard outcomes.count == 2 else { return }
            #expect({ if case .rejected = outcomes[0] { true } else { false } }())
            #expect({ if case .duplicate = outcomes[1] { true } else { false } }())
            #expect(try await refunded(db) == 0)
        }
    }

    @Test func anExpiredKeyIsTakenOverByANewEvent() async throws {
        try await withTestDatabase { db in
            try await pay(db)
            try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_1"), idempotencyKey: "k"))
            try await processAll(db)
            try await db.execute("UPDATE worker.idempotency_keys SET expires_at = now() - interval '1 second'")
            let later = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: refund("rf_2", cents: 700), idempotencyKey: "k"))
            let outcomes = try await processAll(db)
            #expect(outcomes == [.done(jobID: later)])
            #expect(try await refunded(db) == 1200)
            #expect(try await db.int("SELECT job_id::int FROM worker.idempotency_keys WHERE key = 'k'") == Int(later))
        }
    }

    @Test func aRetriedFailureGivesTheKeyBackForTheNextAttempt() async throws {
        try await withTestDatabase { db in
            // A transient failure after the key was claimed must not leave the key behind,
            // or the retry would be taken for a duplicate and the refund never applied.
            let failOnce = Counter()
            let handler = RecordingHandler(idempotencyTTL: .seconds(60)) { _, context in
                try await context.connection.query("UPDATE app.payments SET refunded_cents = refunded_cents + 1", logger: context.logger)
                if failOnce.increment() == 1 { throw JobError.retryable("flaky") }
            }
            try await pay(db)
            try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n": 1}"#))
            let processor = BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger)
            for _ in 0..<2 {
                try await db.makeAllDue()
                _ = try await processor.process(try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w"))
            }
            #expect(try await db.jobCount() == 0)
            #expect(try await refunded(db) == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE status = 'completed'") == 1)
        }
    }
}
