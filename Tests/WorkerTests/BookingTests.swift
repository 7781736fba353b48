import Foundation
import Synchronization
import Testing
import WorkerEngine
import WorkerHandlers
import WorkerRuntime
import WorkerTestSupport

/// The booking saga: seats never oversold, failures compensated, payments once.
@Suite(.timeLimit(.minutes(2))) struct BookingTests {
    func booking(_ id: String, flight: String = "LH400", seats: Int = 1, cents: Int = 10_000) -> String {
        #"{"request_id": "\#(id)", "flight_id": "\#(flight)", "seats": \#(seats), "amount_cents": \#(cents), "currency": "EUR"}"#
    }

    func flight(_ db: TestDatabase, _ id: String = "LH400", seats: Int) async throws {
        try await db.execute("INSERT INTO app.flights (id, seats_total, seats_available) VALUES (\(id), \(seats), \(seats))")
    }

    func seatsLeft(_ db: TestDatabase, _ id: String = "LH400") async throws -> Int {
        try await db.int("SELECT seats_available FROM app.flights WHERE id = \(id)")
    }

    func status(_ db: TestDatabase, _ request: String) async throws -> String {
        try await db.string("SELECT status FROM app.bookings WHERE request_id = \(request)")
    }

    /// Claims and processes every ready job one at a time, making retries due at once.
    @discardableResult
    func processAll(_ db: TestDatabase, _ handlers: HandlerRegistry) async throws -> [JobOutcome] {
        let processor = BatchProcessor(client: db.client, handlers: handlers, workerID: "w", logger: db.logger)
        var outcomes: [JobOutcome] = []
        while try await db.jobCount() > 0 {
            try await db.makeAllDue()
            outcomes += try await processor.process(
                try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w"))
        }
        return outcomes
    }

    @Test func aHundredConcurrentBookingsForTenSeatsConfirmExactlyTen() async throws {
        // Room for what the four workers need (connectionsNeeded each), so that none waits on the pool.
        try await withTestDatabase(connections: 4 * WorkerConfiguration(concurrency: 4).connectionsNeeded) { db in
            try await flight(db, seats: 10)
            _ = try await db.execute("""
                INSERT INTO worker.jobs (kind, payload)
                SELECT 'booking.requested', jsonb_build_object('request_id', 'bk_' || n, 'flight_id', 'LH400',
                       'seats', 1, 'amount_cents', 10000, 'currency', 'EUR')
                FROM generate_series(1, 100) AS n
                """)
            let workers = (0..<4).map { n in
                Worker(client: db.client, configuration: WorkerConfiguration(concurrency: 4, batchSize: 3, workerID: "w\(n)"),
                       handlers: .standard(), logger: db.logger)
            }
            try await runUntilDrained(workers, db, "every booking to be handled")
            #expect(try await seatsLeft(db) == 0)
            #expect(try await db.int("SELECT count(*)::int FROM app.bookings WHERE status = 'confirmed'") == 10)
            #expect(try await db.int("SELECT count(*)::int FROM app.bookings WHERE status = 'cancelled'") == 90)
            #expect(try await db.int("SELECT count(*)::int FROM app.payments WHERE status = 'captured'") == 10)
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE reason = 'booking_failed'") == 90)
        }
    }

    @Test func aDeclinedPaymentReleasesTheSeatAndLeavesOneDeadLetter() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            let gateway = ScriptedGateway([.declined])
            let id = try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1", seats: 2)))
            try await processAll(db, .standard(gateway: gateway))
            #expect(try await seatsLeft(db) == 10)
            #expect(try await status(db, "bk_1") == "cancelled")
            #expect(try await db.deadCount() == 1)
            let letter = try #require(try await db.deadLetters.show(id: id))
            #expect(letter.reason == "booking_failed")
            #expect(letter.lastError?.contains("failed at collect_payment: declined: card declined") == true, "\(letter.lastError ?? "-")")
            #expect(letter.lastError?.contains("released 2 seats, cancelled booking") == true)
            #expect(gateway.charges.isEmpty)
        }
    }

    @Test func anUnavailableGatewayIsRetriedAndThePaymentCollectedOnce() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            let gateway = ScriptedGateway([.unavailable, .unavailable, .ok])
            try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1")))
            let outcomes = try await processAll(db, .standard(gateway: gateway))
            #expect(outcomes.map { if case .retried = $0 { "retried" } else if case .done = $0 { "done" } else { "\($0)" } }
                == ["retried", "retried", "done"])
            #expect(try await status(db, "bk_1") == "confirmed")
            #expect(try await seatsLeft(db) == 9)
            #expect(gateway.charges.count == 1)
        }
    }

    @Test func aThrottlingGatewaySnoozesTheSagaWithoutSpendingItsAttempts() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            let gateway = ScriptedGateway([.throttled, .throttled, .ok])
            let id = try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1"), maxAttempts: 1))
            let outcomes = try await processAll(db, .standard(gateway: gateway))
            #expect(outcomes == [.snoozed(jobID: id, delay: .seconds(20)), .snoozed(jobID: id, delay: .seconds(20)), .done(jobID: id)])
            #expect(try await status(db, "bk_1") == "confirmed")
            #expect(try await seatsLeft(db) == 9, "the snoozed attempts' seats were given back")
            #expect(gateway.charges.count == 1)
        }
    }

    /// A batch's bookings go to the gateway in one call: throttled, they all
    /// wait, with no call each (which a throttling gateway would not want).
    @Test func aThrottledBatchChargeSnoozesEveryBookingOfTheCallWithoutCallingAgain() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            let gateway = ThrottlingOnceLedger()
            var ids: [Int64] = []
            for request in ["bk_1", "bk_2"] {
                ids.append(try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking(request))))
            }
            let processor = BatchProcessor(client: db.client, handlers: .standard(gateway: gateway), workerID: "w", logger: db.logger)
            func batch() async throws -> [JobOutcome] {
                try await processor.process(
                    try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "w"))
            }
            #expect(try await batch().sorted { $0.jobID < $1.jobID } == ids.map { .snoozed(jobID: $0, delay: .seconds(20)) })
            #expect(gateway.calls == ["chargeAll"], "one call, not one more per booking")
            #expect(try await seatsLeft(db) == 10)
            try await db.makeAllDue()
            #expect(try await batch().sorted { $0.jobID < $1.jobID } == ids.map { .done(jobID: $0) })
            #expect(gateway.calls == ["chargeAll", "chargeAll"])
            #expect(try await seatsLeft(db) == 8)
        }
    }

    @Test func aCrashAfterTheChargeResumesWithoutChargingAgain() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            // The gateway takes the money, then the worker dies before its commit.
            let gateway = ScriptedGateway([.crashAfterCharge, .ok])
            try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1")))
            try await processAll(db, .standard(gateway: gateway))
            #expect(try await status(db, "bk_1") == "confirmed")
            #expect(gateway.calls == 2)
            #expect(gateway.charges.count == 1)
            #expect(gateway.refunds.isEmpty)
            #expect(try await seatsLeft(db) == 9)
        }
    }

    @Test func aFailureAfterPaymentRefundsItReleasesTheSeatAndCancels() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            // The flight is cancelled while the saga runs: confirm fails after the payment.
            let gateway = ScriptedGateway([.ok], onCharge: { context in
                try await context.connection.query("UPDATE app.flights SET status = 'cancelled'", logger: context.logger)
            })
            let id = try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1")))
            try await processAll(db, .standard(gateway: gateway))
            #expect(gateway.refunds == Array(gateway.charges.values))
            #expect(try await seatsLeft(db) == 10)
            #expect(try await status(db, "bk_1") == "cancelled")
            let failures = try await db.string("SELECT failures::text FROM app.bookings WHERE request_id = 'bk_1'")
            #expect(failures.contains("flight LH400 is cancelled"))
            let letter = try #require(try await db.deadLetters.show(id: id))
            #expect(letter.reason == "booking_failed")
            #expect(letter.lastError?.contains("refunded payment") == true, "\(letter.lastError ?? "-")")
        }
    }

    /// With the ledger gateway a batch's bookings are booked together, up to
    /// the first that is not simply booked; its saga answers that one.
    @Test func aBatchOfBookingsGivesTheSameAnswersAsOneAtATime() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 3)
            for (request, key) in [("bk_1", nil), ("bk_1", "other"), ("bk_2", nil), ("bk_3", nil), ("bk_4", nil), ("bk_5", nil)] {
                try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking(request), idempotencyKey: key))
            }
            let jobs = try await db.queue.claim(queue: "default", limit: 50, visibilityTimeout: .seconds(30), workerID: "w")
            let outcomes = try await BatchProcessor(client: db.client, handlers: .standard(), workerID: "w", logger: db.logger)
                .process(jobs)
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.count == 4)
            #expect(outcomes.filter { if case .deadLettered = $0 { true } else { false } }.count == 2)
            #expect(try await seatsLeft(db) == 0)
            for request in ["bk_1", "bk_2", "bk_3"] { #expect(try await status(db, request) == "confirmed") }
            for request in ["bk_4", "bk_5"] { #expect(try await status(db, request) == "cancelled") }
            #expect(try await db.int("SELECT count(*)::int FROM app.payments WHERE status = 'captured'") == 3)
            #expect(try await db.string("SELECT payment_ref FROM app.bookings WHERE request_id = 'bk_2'") == "booking:bk_2")
            // bk_1 under its second key gets the first one's answer.
            #expect(try await db.int("SELECT count(DISTINCT result)::int FROM worker.idempotency_keys WHERE key IN ('booking:bk_1', 'other')") == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE reason = 'booking_failed'") == 2)
        }
    }

    @Test func duplicateBookingRequestsBookOnce() async throws {
        try await withTestDatabase { db in
            try await flight(db, seats: 10)
            for key in [nil, nil, "other-key"] {
                try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking("bk_1", seats: 3), idempotencyKey: key))
            }
            let outcomes = try await processAll(db, .standard())
            #expect(outcomes.filter { if case .done = $0 { true } else { false } }.count == 2)  // the first and the other key
            #expect(outcomes.filter { if case .duplicate = $0 { true } else { false } }.count == 1)
            #expect(try await seatsLeft(db) == 7)
            #expect(try await db.int("SELECT count(*)::int FROM app.payments") == 1)
        }
    }
}

/// A payment gateway outside the database, scripted per charge call. What it
/// records survives the job transaction's rollback, as a real gateway's would.
final class ScriptedGateway: PaymentGateway {
    enum Step: Sendable { case ok, unavailable, throttled, declined, crashAfterCharge }
    struct SimulatedCrash: Error {}

    private let state: Mutex<(script: [Step], calls: Int, charges: [String: String], refunds: [String])>
    private let onCharge: (@Sendable (JobContext) async throws -> Void)?

    init(_ script: [Step], onCharge: (@Sendable (JobContext) async throws -> Void)? = nil) {
        state = Mutex((script, 0, [:], []))
        self.onCharge = onCharge
    }

    var calls: Int { state.withLock { $0.calls } }
    var charges: [String: String] { state.withLock { $0.charges } }
    var refunds: [String] { state.withLock { $0.refunds } }

    func charge(key: String, amountCents: Int64, currency: String, context: JobContext) async throws -> String {
        let (step, reference) = state.withLock { state -> (Step, String) in
            state.calls += 1
            let step = state.script.isEmpty ? .ok : state.script.removeFirst()
            guard step == .ok || step == .crashAfterCharge else { return (step, "") }
            let reference = state.charges[key] ?? "ch_\(state.charges.count + 1)"
            state.charges[key] = reference
            return (step, reference)
        }
        switch step {
        case .unavailable: throw PaymentError.unavailable("timeout")
        case .throttled: throw PaymentError.throttled(retryAfter: .seconds(20), "429")
        case .declined: throw PaymentError.declined("card declined")
        case .crashAfterCharge: throw SimulatedCrash()
        case .ok:
            try await onCharge?(context)
            return reference
        }
    }

    func refund(reference: String, context: JobContext) async throws {
        state.withLock { $0.refunds.append(reference) }
    }
}

/// The ledger, whose first batch charge is throttled; records its calls.
final class ThrottlingOnceLedger: BatchPaymentGateway {
    private let ledger = LedgerGateway()
    private let recorded = Mutex<[String]>([])
    var calls: [String] { recorded.withLock { $0 } }

    func chargeAll(_ charges: [Charge], context: JobContext) async throws -> [String] {
        let first = recorded.withLock { $0.append("chargeAll"); return $0.count == 1 }
        if first { throw PaymentError.throttled(retryAfter: .seconds(20), "429") }
        return try await ledger.chargeAll(charges, context: context)
    }

    func charge(key: String, amountCents: Int64, currency: String, context: JobContext) async throws -> String {
        recorded.withLock { $0.append("charge") }
        return try await ledger.charge(key: key, amountCents: amountCents, currency: currency, context: context)
    }

    func refund(reference: String, context: JobContext) async throws {
        try await ledger.refund(reference: reference, context: context)
    }
}
