import Logging
import PostgresNIO

/// Does the work of one job kind.
///
/// The handler runs inside the batch's processing transaction, after the job's
/// row is locked and its lease token checked: whatever it writes through
/// `context.connection` commits together with the job's ack, or not at all. It
/// throws ``JobError`` to say whether a failure is worth retrying, or that the
/// event is a business rejection.
public protocol JobHandler: Sendable {
    /// Does the job's work and returns its result (stored with the idempotency
    /// key and given back to duplicates).
    func handle(_ job: Job, context: JobContext) async throws -> JobResult

    /// The event's business id, used as its idempotency key when the producer
    /// gave none (`nil`: the key is the kind and a hash of the payload).
    func idempotencyKey(for job: Job) -> String?

    /// How long a processed event's key stays live; `nil` for kinds without
    /// effects to protect, which then skip the idempotency table.
    var idempotencyTTL: Duration? { get }

    /// The contract of the kind's payloads, checked before any effect; an
    /// event that breaks it is dead-lettered as `invalid_event`.
    var schema: EventSchema? { get }

    /// The rows the job will lock, as a key that sorts like them (a refund's
    /// payment, then its refund id). Every batch runs its jobs in this order,
    /// so that two batches touching the same rows take their locks in the same
    /// order and wait for each other instead of deadlocking.
    func lockOrder(for job: Job) -> String?

    /// Whether `handle` writes through `context.connection`. A handler that
    /// never does needs no savepoint, and without a key or a maximum age its
    /// batches need no transaction; one that says `false` and writes anyway
    /// would keep the writes of a failed attempt.
    var writesToDatabase: Bool { get }
}

extension JobHandler {
    public func idempotencyKey(for job: Job) -> String? { nil }
    public var idempotencyTTL: Duration? { .seconds(24 * 3600) }
    public var schema: EventSchema? { nil }
    public func lockOrder(for job: Job) -> String? { nil }
    public var writesToDatabase: Bool { true }
}

/// What a handler produced, as JSON text.
public struct JobResult: Sendable, Equatable {
    public var json: String
    public init(json: String) { self.json = json }
    public static let empty = JobResult(json: "{}")
}

/// What a handler may use while it runs.
public struct JobContext: Sendable {
    /// The connection of the processing transaction. If the handler throws,
    /// what it wrote is rolled back: with the whole first run of the batch, or
    /// with the job's savepoint when the batch runs again. Handlers may be
    /// called again for the same attempt when another job of their batch
    /// failed, so they must be idempotent (their outside effects keyed).
    public let connection: PostgresConnection
    public let logger: Logger
    public let workerID: String
}

/// The handlers a worker runs, by job kind, and the retry policy of each kind.
public struct HandlerRegistry: Sendable {
    private var handlers: [String: any JobHandler] = [:]
    private var policies: [String: RetryPolicy] = [:]
    private var ttls: [String: Duration] = [:]
    public var defaultPolicy: RetryPolicy
    /// Larger payloads are invalid events: a queue is not a blob store.
    public var maxPayloadBytes = 64 * 1024

    public init(defaultPolicy: RetryPolicy = .default) {
        self.defaultPolicy = defaultPolicy
    }

    public mutating func register(_ kind: String, _ handler: any JobHandler, policy: RetryPolicy? = nil) {
        handlers[kind] = handler
        if let policy { policies[kind] = policy }
    }

    public mutating func setPolicy(_ policy: RetryPolicy, for kind: String) {
        policies[kind] = policy
    }

    /// Overrides the handler's own key lifetime (`workerd --idempotency-ttl`).
    public mutating func setIdempotencyTTL(_ ttl: Duration, for kind: String) {
        ttls[kind] = ttl
    }

    public func handler(for kind: String) -> (any JobHandler)? { handlers[kind] }

    /// How long keys of `kind` live; `nil` when the kind skips idempotency.
    public func idempotencyTTL(for kind: String) -> Duration? {
        guard let handler = handlers[kind], let own = handler.idempotencyTTL else { return nil }
        return ttls[kind] ?? own
    }

    public func policy(for kind: String) -> RetryPolicy { policies[kind] ?? defaultPolicy }

    public var kinds: [String] { handlers.keys.sorted() }
}
