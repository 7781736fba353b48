import PostgresNIO
import WorkerEngine

/// Where a booking's payment is collected. A charge is idempotent by its key,
/// like a payment API's idempotency key: a retried saga that charges again
/// with the same key gets the first charge back, never a second one.
public protocol PaymentGateway: Sendable {
    /// Collects `amountCents` once per `key`; returns the charge's reference.
    func charge(key: String, amountCents: Int64, currency: String, context: JobContext) async throws -> String
    /// Gives a collected charge back (a saga's compensation).
    func refund(reference: String, context: JobContext) async throws
}

/// A gateway that collects many charges in one request. With one, the
/// booking handler books a batch's bookings together; with any other, each
/// booking runs its own saga.
public protocol BatchPaymentGateway: PaymentGateway {
    /// Collects each charge once per key and returns their references, in
    /// order. Throwing abandons the batch's run: its bookings then run one at
    /// a time and charge again with the same keys.
    func chargeAll(_ charges: [Charge], context: JobContext) async throws -> [String]
}

/// One payment to collect, idempotent by its key.
public struct Charge: Sendable {
    public var key: String
    public var amountCents: Int64
    public var currency: String

    public init(key: String, amountCents: Int64, currency: String) {
        self.key = key
        self.amountCents = amountCents
        self.currency = currency
    }
}

/// A gateway failure, classified as the saga needs it.
public enum PaymentError: Error, Sendable, CustomStringConvertible {
    /// The gateway could not answer (timeout, 5xx): worth retrying.
    case unavailable(String)
    /// The gateway refused the payment (declined card): final.
    case declined(String)
    /// The gateway asks to be called again later (HTTP 429 with Retry-After):
    /// not a failure, and no attempt is spent on it.
    case throttled(retryAfter: Duration, String)

    public var description: String {
        switch self {
        case .unavailable(let message): "payment gateway unavailable: \(message)"
        case .declined(let message): "payment declined: \(message)"
        case .throttled(let retryAfter, let message): "payment gateway throttled for \(retryAfter): \(message)"
        }
    }
}

/// The default gateway: an in-database ledger. A charge is a row of
/// `app.payments` (id = the key) written in the job's transaction, so it
/// commits or rolls back with the saga, and a booking's payment can later be
/// refunded with a `refund.requested` event like any other.
public struct LedgerGateway: BatchPaymentGateway {
    public init() {}

    public func chargeAll(_ charges: [Charge], context: JobContext) async throws -> [String] {
        try await context.connection.query(
            """
            INSERT INTO app.payments (id, amount_cents, currency)
            SELECT * FROM unnest(\(charges.map(\.key)), \(charges.map(\.amountCents)), \(charges.map(\.currency)))
            ON CONFLICT (id) DO NOTHING
            """, logger: context.logger)
        return charges.map(\.key)
    }

    public func charge(key: String, amountCents: Int64, currency: String, context: JobContext) async throws -> String {
        try await context.connection.query(
            """
            INSERT INTO app.payments (id, amount_cents, currency) VALUES (\(key), \(amountCents), \(currency))
            ON CONFLICT (id) DO NOTHING
            """, logger: context.logger)
        return key
    }

    public func refund(reference: String, context: JobContext) async throws {
        try await context.connection.query(
            """
            UPDATE app.payments SET refunded_cents = amount_cents, status = 'refunded', updated_at = now()
            WHERE id = \(reference)
            """, logger: context.logger)
    }
}
