import Foundation
import PostgresNIO
import WorkerEngine

/// Kind `refund.requested`: refunds part or all of a captured payment.
///
/// `{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}`
///
/// The refund applies with one conditional update that can never take a
/// payment beyond what was paid, and the refund reference is unique, so the
/// same refund twice applies once. A refund over the remaining amount, in
/// another currency, or of an unknown payment is a business rejection.
public struct RefundHandler: JobHandler {
    struct Event: FieldDecodable {
        var refund_id: String
        var payment_id: String
        var amount_cents: Int64
        var currency: String

        init(_ fields: EventFields) throws {
            refund_id = try fields.string("refund_id")
            payment_id = try fields.string("payment_id")
            amount_cents = try fields.integer("amount_cents")
            currency = try fields.string("currency")
        }
    }

    public init() {}

    public var schema: EventSchema? { Self.published }

    static let published = EventSchema.compiledIn(PackageResources.refund_requested_schema_json, name: "refund.requested.schema.json")

    public func idempotencyKey(for job: Job) -> String? {
        (try? job.decode(Event.self)).map { "refund:\($0.refund_id)" }
    }

    public func lockOrder(for job: Job) -> String? {
        (try? job.decode(Event.self)).map { "\($0.payment_id)\u{1}\($0.refund_id)" }
    }

    public func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        let event = try job.decode(Event.self)
        guard event.amount_cents > 0 else { throw JobError.invalidEvent("amount_cents must be positive") }

        let db = context.connection
        let rows = try await db.execute(ApplyRefund(event: event, jobID: job.id), logger: context.logger)
        var inserted = false
        var refundedTotal: Int64?
        for try await (wasInserted, total) in rows {
            (inserted, refundedTotal) = (wasInserted, total)
        }
        if let refundedTotal {
            return result(event, refundedTotal: refundedTotal)
        }
        if inserted {
            // The payment exists but refused the amount; the handler's savepoint undoes the refund row.
            throw JobError.rejected(try await whyRefused(event, db: db, logger: context.logger))
        }
        return try await earlierRefund(event, db: db, logger: context.logger)
    }

    /// The refund reference exists already (sent again under another
    /// idempotency key), or the payment does not.
    private func earlierRefund(_ event: Event, db: PostgresConnection, logger: Logger) async throws -> JobResult {
        let rows = try await db.query(
            """
            SELECT r.payment_id, r.amount_cents, r.currency, p.refunded_cents
            FROM app.refunds AS r JOIN app.payments AS p ON p.id = r.payment_id
            WHERE r.refund_id = \(event.refund_id)
            """, logger: logger)
        for try await (payment, amount, currency, total) in rows.decode((String, Int64, String, Int64).self) {
            guard payment == event.payment_id, amount == event.amount_cents, currency == event.currency else {
                throw JobError.rejected(
                    "refund \(event.refund_id) exists already for \(amount) \(currency) of payment \(payment)")
            }
            return result(event, refundedTotal: total)
        }
        throw JobError.rejected("unknown payment \(event.payment_id)")
    }

    private func whyRefused(_ event: Event, db: PostgresConnection, logger: Logger) async throws -> String {
        let rows = try await db.query(
            "SELECT amount_cents, refunded_cents, currency FROM app.payments WHERE id = \(event.payment_id)",
            logger: logger)
        for try await (amount, refunded, currency) in rows.decode((Int64, Int64, String).self) {
            if currency != event.currency {
                return "payment \(event.payment_id) is in \(currency), not \(event.currency)"
            }
            return "refund of \(event.amount_cents) exceeds the \(amount - refunded) left of payment \(event.payment_id)"
        }
        return "unknown payment \(event.payment_id)"
    }

    func result(_ event: Event, refundedTotal: Int64) -> JobResult {
        .object([
            "refund_id": .string(event.refund_id), "payment_id": .string(event.payment_id),
            "amount_cents": .integer(event.amount_cents), "currency": .string(event.currency),
            "refunded_total_cents": .integer(refundedTotal), "status": .string("applied"),
        ])
    }
}

extension RefundHandler: BatchJobHandler {
    /// Applies the batch's refunds in one call of `app.apply_refunds`, which
    /// stops before the first refund that is not simply applied (a rejection,
    /// an earlier refund of the same reference): `handle` answers that one.
    public func handleBatch(_ jobs: [Job], context: JobContext) async throws -> [JobResult] {
        let events = try jobs.map { try $0.decode(Event.self) }
        let call = ApplyRefunds(events: events, jobIDs: jobs.map(\.id))
        var results: [JobResult] = []
        for try await total in try await context.connection.execute(call, logger: context.logger) {
            results.append(result(events[results.count], refundedTotal: total))
        }
        return results
    }
}

/// The refund's one conditional statement, prepared once per connection: it
/// runs for every refund, and planning it each time was about a quarter of a
/// refund drain's CPU. (Safe as a generic plan: it finds rows by unique keys
/// of tables that only grow, unlike the queue's statements.)
struct ApplyRefund: PostgresPreparedStatement {
    static let sql = """
        WITH refund AS (
            INSERT INTO app.refunds (refund_id, payment_id, amount_cents, currency, job_id)
            SELECT $1, p.id, $3, $4, $5
            FROM app.payments AS p WHERE p.id = $2
            ON CONFLICT (refund_id) DO NOTHING
            RETURNING refund_id
        ), paid AS (
            UPDATE app.payments
            SET refunded_cents = refunded_cents + $3,
                status = CASE WHEN refunded_cents + $3 = amount_cents THEN 'refunded' ELSE 'partially_refunded' END,
                updated_at = now()
            WHERE id = $2 AND currency = $4 AND refunded_cents + $3 <= amount_cents
              AND EXISTS (SELECT 1 FROM refund)
            RETURNING refunded_cents
        )
        SELECT EXISTS (SELECT 1 FROM refund), (SELECT refunded_cents FROM paid)
        """
    typealias Row = (Bool, Int64?)

    var event: RefundHandler.Event
    var jobID: Int64

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(event.refund_id)
        bindings.append(event.payment_id)
        bindings.append(event.amount_cents)
        bindings.append(event.currency)
        bindings.append(jobID)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// The call of `app.apply_refunds`, prepared once per connection (its plan
/// is a function scan whatever the statistics say).
struct ApplyRefunds: PostgresPreparedStatement {
    static let name = "app_apply_refunds"
    static let sql = "SELECT refunded_total_cents FROM app.apply_refunds($1, $2, $3, $4, $5)"
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .textArray, .int8Array, .textArray, .int8Array]

    var events: [RefundHandler.Event]
    var jobIDs: [Int64]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(events.map(\.refund_id))
        bindings.append(events.map(\.payment_id))
        bindings.append(events.map(\.amount_cents))
        bindings.append(events.map(\.currency))
        bindings.append(jobIDs)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.makeRandomAccess()[0].decode(Int64.self) }
}
