/// What a handler throws to say how a failure is to be treated. Any other error
/// a handler throws is retryable: an unknown failure deserves another try.
public enum JobError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A transient failure: retried with backoff until the attempts run out.
    case retryable(String)
    /// A failure that will not go away by retrying: dead-lettered at once.
    case nonRetryable(String)
    /// The payload is not a valid event of its kind: dead-lettered at once with
    /// reason `invalid_event`, never retried.
    case invalidEvent(String)
    /// The handler failed for good and has already compensated what it had
    /// done: its writes (the compensations) are kept and the job is
    /// dead-lettered with `reason` (a saga's `booking_failed`).
    case compensated(reason: DeadLetterReason, String)
    /// A valid event the business refuses (a refund beyond what was paid, an
    /// unknown payment): its effects are rolled back, the refusal is stored as
    /// the event's result and the job is acked. Not retried, not dead-lettered.
    case rejected(String)
    /// Not yet (a downstream that asks to be called back later, a resource
    /// not ready): the job runs again after `delay` (at most 12 hours) without
    /// spending an attempt, like River's JobSnooze or SQS's ChangeMessageVisibility. Its
    /// writes are rolled back as a failure's; it keeps its ordering key, and
    /// its kind's max event age still bounds how long it can be put off.
    case snoozed(for: Duration, String)

    public var description: String {
        switch self {
        case .retryable(let message), .nonRetryable(let message), .invalidEvent(let message), .rejected(let message),
             .compensated(_, let message), .snoozed(_, let message):
            message
        }
    }
}

/// Why a job is in the dead-letter table. The engine's own reasons are below;
/// handlers add theirs (`booking_failed`).
public struct DeadLetterReason: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// It failed on every one of its attempts.
    public static let maxAttempts = Self(rawValue: "max_attempts")
    /// Its handler reported a failure that retrying cannot fix.
    public static let nonRetryable = Self(rawValue: "non_retryable")
    /// It waited longer than its kind's maximum event age.
    public static let expired = Self(rawValue: "expired")
    /// Its payload or kind is not a valid event.
    public static let invalidEvent = Self(rawValue: "invalid_event")
    /// Its idempotency key is live with another payload: a reused key.
    public static let idempotencyConflict = Self(rawValue: "idempotency_conflict")
    /// An operator cancelled it (`workerctl jobs cancel`).
    public static let cancelled = Self(rawValue: "cancelled")
}
