import Foundation
import PostgresNIO
import WorkerEngine

/// Kind `booking.requested`: the booking saga.
///
/// `{"request_id": "bk_77", "flight_id": "LH400", "seats": 2, "amount_cents": 45000, "currency": "EUR"}`
///
/// Steps: reserve the seats (a conditional update that never oversells),
/// reserve the booking, collect the payment through the gateway, confirm. The
/// bookings row holds the saga's state, so an attempt resumes where the last
/// committed one stopped and never repeats a step's effect; the only effect
/// outside the job's transaction is the gateway's, and its charge is keyed by
/// the request. An attempt writes the state only where it ends (confirmed, or
/// cancelled): the states between would roll back with a failed attempt
/// anyway, and writing each cost a statement per step. A step that fails for good is compensated in reverse order
/// (refund the payment, release the seats, cancel the booking) and the job is
/// dead-lettered as `booking_failed` with every failure. A gateway that is
/// only unavailable makes the attempt fail as a whole and retry with backoff;
/// one that throttles snoozes the saga for as long as it asks, no attempt spent.
public struct BookingHandler: JobHandler {
    struct Event: FieldDecodable {
        var request_id: String
        var flight_id: String
        var seats: Int
        var amount_cents: Int64
        var currency: String

        init(_ fields: EventFields) throws {
            request_id = try fields.string("request_id")
            flight_id = try fields.string("flight_id")
            seats = Int(try fields.integer("seats"))
            amount_cents = try fields.integer("amount_cents")
            currency = try fields.string("currency")
        }
    }

    enum Status: String {
        case requested, seatReserved = "seat_reserved", awaitingPayment = "awaiting_payment", paid, confirmed, cancelled
    }

    /// A step that cannot succeed by retrying.
    struct StepFailure: Error {
        var step: String
        var error: String
    }

    public static let failed = DeadLetterReason(rawValue: "booking_failed")

    let gateway: any PaymentGateway

    public init(gateway: any PaymentGateway = LedgerGateway()) {
        self.gateway = gateway
    }

    public var schema: EventSchema? { Self.published }

    static let published = EventSchema.compiledIn(PackageResources.booking_requested_schema_json, name: "booking.requested.schema.json")

    public func idempotencyKey(for job: Job) -> String? {
        (try? job.decode(Event.self)).map { "booking:\($0.request_id)" }
    }

    public func lockOrder(for job: Job) -> String? {
        (try? job.decode(Event.self)).map { "\($0.flight_id)\u{1}\($0.request_id)" }
    }

    public func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        let event = try job.decode(Event.self)
        let saga = Saga(event: event, jobID: job.id, context: context, gateway: gateway)
        var status = try await saga.load()
        var paymentRef: String?
        do {
            if status == .requested { status = try await saga.reserveSeats() }
            if status == .seatReserved { status = try await saga.reserveBooking() }
            if status == .awaitingPayment { (status, paymentRef) = try await saga.collectPayment() }
            if status == .paid { status = try await saga.confirm(paymentRef: paymentRef) }
        } catch let failure as StepFailure {
            let undone = try await saga.compensate(from: status, paymentRef: paymentRef, failure: failure)
            throw JobError.compensated(
                reason: Self.failed,
                "booking \(event.request_id) failed at \(failure.step): \(failure.error); compensated: \(undone.joined(separator: ", "))")
        }
        switch status {
        case .confirmed:
            return try await saga.result(paymentRef: paymentRef)
        case .cancelled:
            throw JobError.rejected("booking \(event.request_id) was cancelled earlier")
        default:
            throw PostgresWorkerError.unexpected("booking \(event.request_id) stopped in state \(status.rawValue)")
        }
    }
}

extension BookingHandler: BatchJobHandler {
    /// Books the batch's bookings together when the gateway collects charges
    /// in batches: `app.reserve_bookings` reserves the seats of each new
    /// booking and records it, stopping before the first it cannot (an
    /// existing booking, too few seats, an unknown or cancelled flight:
    /// `handle` and its saga answer that one); then one request collects their
    /// payments and one statement confirms them. Three statements whatever the
    /// batch's size; the flights stay locked by the reservation until commit,
    /// so none is cancelled under a booking it confirms.
    public func handleBatch(_ jobs: [Job], context: JobContext) async throws -> [JobResult] {
        guard let gateway = gateway as? any BatchPaymentGateway else { return [] }
        let events = try jobs.map { try $0.decode(Event.self) }
        var count = 0
        for try await _ in try await context.connection.execute(ReserveBookings(events: events), logger: context.logger) {
            count += 1
        }
        guard count > 0 else { return [] }

        let booked = Array(events.prefix(count))
        let references: [String]
        do {
            references = try await gateway.chargeAll(
                booked.map { Charge(key: Self.paymentKey($0), amountCents: $0.amount_cents, currency: $0.currency) },
                context: context)
        } catch PaymentError.throttled(let retryAfter, let message) {
            // Every booking of the call waits, without a call of its own.
            throw JobError.snoozed(for: retryAfter, "collect_payment: gateway throttled: \(message)")
        }
        try await context.connection.query(
            """
            UPDATE app.bookings AS b SET status = 'confirmed', payment_ref = c.reference, updated_at = now()
            FROM unnest(\(booked.map(\.request_id)), \(references)) AS c(request_id, reference)
            WHERE b.request_id = c.request_id
            """, logger: context.logger)
        return zip(booked, references).map { Self.confirmation($0, paymentRef: $1) }
    }

    static func paymentKey(_ event: Event) -> String { "booking:\(event.request_id)" }

    static func confirmation(_ event: Event, paymentRef: String) -> JobResult {
        .object([
            "request_id": .string(event.request_id), "flight_id": .string(event.flight_id),
            "seats": .integer(Int64(event.seats)), "payment_ref": .string(paymentRef), "status": .string("confirmed"),
        ])
    }
}

/// The call of `app.reserve_bookings`, prepared once per connection (its plan
/// is a function scan whatever the statistics say).
struct ReserveBookings: PostgresPreparedStatement {
    static let name = "app_reserve_bookings"
    static let sql = "SELECT seats_left FROM app.reserve_bookings($1, $2, $3, $4, $5)"
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .textArray, .int4Array, .int8Array, .textArray]

    var events: [BookingHandler.Event]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(events.map(\.request_id))
        bindings.append(events.map(\.flight_id))
        bindings.append(events.map { Int32($0.seats) })
        bindings.append(events.map(\.amount_cents))
        bindings.append(events.map(\.currency))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int32 { try row.makeRandomAccess()[0].decode(Int32.self) }
}

/// One attempt of the saga for one event, on the job's transaction.
private struct Saga {
    typealias Status = BookingHandler.Status
    typealias StepFailure = BookingHandler.StepFailure

    let event: BookingHandler.Event
    let jobID: Int64
    let context: JobContext
    let gateway: any PaymentGateway

    var db: PostgresConnection { context.connection }
    var logger: Logger { context.logger }
    var paymentKey: String { BookingHandler.paymentKey(event) }

    /// Creates the booking on its first attempt and locks it; returns where the saga stands.
    func load() async throws -> Status {
        // The first attempt's insert returns the new row: one statement.
        let inserted = try await db.query(
            """
            INSERT INTO app.bookings (request_id, flight_id, seats, amount_cents, currency, status)
            SELECT \(event.request_id), f.id, \(event.seats), \(event.amount_cents), \(event.currency), 'requested'
            FROM app.flights AS f WHERE f.id = \(event.flight_id)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING status
            """, logger: logger)
        for try await _ in inserted.decode(String.self) { return .requested }
        let rows = try await db.query(
            """
            SELECT status, flight_id, seats, amount_cents, currency FROM app.bookings
            WHERE request_id = \(event.request_id) FOR UPDATE
            """, logger: logger)
        for try await (status, flight, seats, amount, currency) in rows.decode((String, String, Int, Int64, String).self) {
            guard flight == event.flight_id, seats == event.seats, amount == event.amount_cents, currency == event.currency else {
                throw JobError.rejected("booking \(event.request_id) exists already for \(seats) seats on \(flight)")
            }
            guard let known = Status(rawValue: status) else {
                throw PostgresWorkerError.unexpected("booking \(event.request_id) has unknown status \(status)")
            }
            return known
        }
        throw JobError.rejected("unknown flight \(event.flight_id)")
    }

    func reserveSeats() async throws -> Status {
        let rows = try await db.query(
            """
            UPDATE app.flights SET seats_available = seats_available - \(event.seats)
            WHERE id = \(event.flight_id) AND status = 'scheduled' AND seats_available >= \(event.seats)
            RETURNING seats_available
            """, logger: logger)
        for try await _ in rows.decode(Int.self) { return .seatReserved }
        throw StepFailure(step: "reserve_seats", error: "flight \(event.flight_id) has fewer than \(event.seats) seats left")
    }

    func reserveBooking() async throws -> Status {
        .awaitingPayment
    }

    func collectPayment() async throws -> (Status, String) {
        do {
            let reference = try await gateway.charge(
                key: paymentKey, amountCents: event.amount_cents, currency: event.currency, context: context)
            return (.paid, reference)
        } catch PaymentError.declined(let message) {
            throw StepFailure(step: "collect_payment", error: "declined: \(message)")
        } catch PaymentError.unavailable(let message) {
            throw JobError.retryable("collect_payment: gateway unavailable: \(message)")
        } catch PaymentError.throttled(let retryAfter, let message) {
            throw JobError.snoozed(for: retryAfter, "collect_payment: gateway throttled: \(message)")
        }
    }

    /// Confirms while the flight is still scheduled (held so by a share lock
    /// until commit), in one statement with the payment's reference.
    func confirm(paymentRef: String?) async throws -> Status {
        let rows = try await db.query(
            """
            UPDATE app.bookings AS b
            SET status = 'confirmed', payment_ref = coalesce(\(paymentRef), b.payment_ref), updated_at = now()
            FROM (SELECT id FROM app.flights WHERE id = \(event.flight_id) AND status = 'scheduled' FOR SHARE) AS f
            WHERE b.request_id = \(event.request_id) AND b.flight_id = f.id
            RETURNING b.status
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return .confirmed }
        let flight = try await db.query("SELECT status FROM app.flights WHERE id = \(event.flight_id)", logger: logger)
        for try await flightStatus in flight.decode(String.self) {
            throw StepFailure(step: "confirm", error: "flight \(event.flight_id) is \(flightStatus)")
        }
        throw StepFailure(step: "confirm", error: "flight \(event.flight_id) is gone")
    }

    /// Undoes, newest first, the steps done so far; cancels the booking with
    /// the failure on record. Returns what it undid.
    func compensate(from status: Status, paymentRef: String?, failure: StepFailure) async throws -> [String] {
        var undone: [String] = []
        if status == .paid {
            let reference: String
            if let paymentRef { reference = paymentRef } else { reference = try await paymentReference() }
            try await gateway.refund(reference: reference, context: context)
            undone.append("refunded payment \(reference)")
        }
        if [.seatReserved, .awaitingPayment, .paid].contains(status) {
            try await db.query(
                """
                UPDATE app.flights SET seats_available = seats_available + \(event.seats)
                WHERE id = \(event.flight_id)
                """, logger: logger)
            undone.append("released \(event.seats) seats")
        }
        try await db.query(
            """
            UPDATE app.bookings
            SET status = 'cancelled', updated_at = now(),
                failures = failures || jsonb_build_array(jsonb_build_object(
                    'step', \(failure.step)::text, 'error', \(failure.error)::text, 'at', now(), 'job_id', \(jobID)::bigint))
            WHERE request_id = \(event.request_id)
            """, logger: logger)
        undone.append("cancelled booking")
        return undone
    }

    func result(paymentRef: String?) async throws -> JobResult {
        let reference: String
        if let paymentRef { reference = paymentRef } else { reference = try await paymentReference() }
        return BookingHandler.confirmation(event, paymentRef: reference)
    }

    private func paymentReference() async throws -> String {
        let rows = try await db.query(
            "SELECT payment_ref FROM app.bookings WHERE request_id = \(event.request_id)", logger: logger)
        for try await reference in rows.decode(String?.self) { if let reference { return reference } }
        throw PostgresWorkerError.unexpected("booking \(event.request_id) is paid but has no payment reference")
    }
}
