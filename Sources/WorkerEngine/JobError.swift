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
    /// A valid event the business refuses (a refund beyond what was paid, an
    /// unknown payment): its effects are rolled back, the refusal is stored as
    /// the event's result and the job is acked. Not retried, not dead-lettered.
    case rejected(String)

    public var description: String {
        switch self {
        case .retryable(let message), .nonRetryable(let message), .invalidEvent(let message), .rejected(let message):
            message
        }
    }
}

/// Why a job is in the dead-letter table.
public enum DeadLetterReason: String, Sendable, CaseIterable {
    /// It failed on every one of its attempts.
    case maxAttempts = "max_attempts"
    /// Its handler reported a failure that retrying cannot fix.
    case nonRetryable = "non_retryable"
    /// It waited longer than its kind's maximum event age.
    case expired
    /// Its payload or kind is not a valid event.
    case invalidEvent = "invalid_event"
    /// Its idempotency key is live with another payload: a reused key.
    case idempotencyConflict = "idempotency_conflict"
}
