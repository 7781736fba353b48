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
/// the request. A step that fails for good is compensated in reverse order
/// (refund the payment, release the seats, cancel the booking) and the job is
/// dead-lettered as `booking_failed` with every failure. A gateway that is
/// only unavailable makes the attempt fail as a whole and retry with backoff.
public struct BookingHandler: JobHandler {
    struct Event: Decodable {
        var request_id: String
        var flight_id: String
        var seats: Int
        var amount_cents: Int64
        var currency: String
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
            if status == .paid { status = try await saga.confirm() }
        } catch let failure as StepFailure {
            let undone = try await saga.compensate(from: status, failure: failure)
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
    var paymentKey: String { "booking:\(event.request_id)" }

    /// Creates the booking on its first attempt and locks it; returns where the saga stands.
    func load() async throws -> Status {
        try await db.query(
            """
            INSERT INTO app.bookings (request_id, flight_id, seats, amount_cents, currency, status)
            SELECT \(event.request_id), f.id, \(event.seats), \(event.amount_cents), \(event.currency), 'requested'
            FROM app.flights AS f WHERE f.id = \(event.flight_id)
            ON CONFLICT (request_id) DO NOTHING
            """, logger: logger)
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
        var reserved = false
        for try await _ in rows.decode(Int.self) { reserved = true }
        guard reserved else {
            throw StepFailure(step: "reserve_seats", error: "flight \(event.flight_id) has fewer than \(event.seats) seats left")
        }
        return try await advance(to: .seatReserved)
    }

    func reserveBooking() async throws -> Status {
        try await advance(to: .awaitingPayment)
    }

    func collectPayment() async throws -> (Status, String) {
        let reference: String
        do {
            reference = try await gateway.charge(
                key: paymentKey, amountCents: event.amount_cents, currency: event.currency, context: context)
        } catch PaymentError.declined(let message) {
            throw StepFailure(step: "collect_payment", error: "declined: \(message)")
        } catch PaymentError.unavailable(let message) {
            throw JobError.retryable("collect_payment: gateway unavailable: \(message)")
        }
        try await db.query(
            "UPDATE app.bookings SET payment_ref = \(reference) WHERE request_id = \(event.request_id)", logger: logger)
        return (try await advance(to: .paid), reference)
    }

    func confirm() async throws -> Status {
        let rows = try await db.query(
            "SELECT status FROM app.flights WHERE id = \(event.flight_id) FOR SHARE", logger: logger)
        for try await flightStatus in rows.decode(String.self) where flightStatus != "scheduled" {
            throw StepFailure(step: "confirm", error: "flight \(event.flight_id) is \(flightStatus)")
        }
        return try await advance(to: .confirmed)
    }

    /// Undoes, newest first, the steps done so far; cancels the booking with
    /// the failure on record. Returns what it undid.
    func compensate(from status: Status, failure: StepFailure) async throws -> [String] {
        var undone: [String] = []
        if status == .paid {
            let reference = try await paymentReference()
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
        return .object([
            "request_id": event.request_id, "flight_id": event.flight_id, "seats": event.seats,
            "payment_ref": reference, "status": "confirmed",
        ])
    }

    private func paymentReference() async throws -> String {
        let rows = try await db.query(
            "SELECT payment_ref FROM app.bookings WHERE request_id = \(event.request_id)", logger: logger)
        for try await reference in rows.decode(String?.self) { if let reference { return reference } }
        throw PostgresWorkerError.unexpected("booking \(event.request_id) is paid but has no payment reference")
    }

    private func advance(to status: Status) async throws -> Status {
        try await db.query(
            """
            UPDATE app.bookings SET status = \(status.rawValue), updated_at = now()
            WHERE request_id = \(event.request_id)
            """, logger: logger)
        return status
    }
}
