import Logging
import PostgresNIO

/// Does the work of one job kind.
///
/// The handler runs inside the batch's processing transaction, after the job's
/// row is locked and its lease token checked: whatever it writes through
/// `context.connection` commits together with the job's ack, or not at all. It
/// throws ``JobError`` to say whether a failure is worth retrying.
public protocol JobHandler: Sendable {
    func handle(_ job: Job, context: JobContext) async throws
}

/// What a handler may use while it runs.
public struct JobContext: Sendable {
    /// The connection of the processing transaction; the handler's statements
    /// run inside a savepoint that is rolled back if the handler throws.
    public let connection: PostgresConnection
    public let logger: Logger
    public let workerID: String
}

/// The handlers a worker runs, by job kind, and the retry policy of each kind.
public struct HandlerRegistry: Sendable {
    private var handlers: [String: any JobHandler] = [:]
    private var policies: [String: RetryPolicy] = [:]
    public var defaultPolicy: RetryPolicy

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

    public func handler(for kind: String) -> (any JobHandler)? { handlers[kind] }

    public func policy(for kind: String) -> RetryPolicy { policies[kind] ?? defaultPolicy }

    public var kinds: [String] { handlers.keys.sorted() }
}
