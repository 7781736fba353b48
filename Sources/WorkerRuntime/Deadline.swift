/// An operation given up because its answer would come too late to be used.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let operation: String
    public let reason: String

    public var description: String { "\(operation) abandoned: \(reason)" }
}

/// Runs `body` until it returns or `deadline()` passes. The deadline is read
/// again at each of `ticker`'s ticks (without one, every second and at the
/// deadline), so it may move while `body` runs. On expiry
/// `body` is cancelled, which closes the connection of a statement in flight
/// (see `withLiveConnection`), and `exceeded` is thrown.
///
/// Why: a statement sent over a link that went silent waits for TCP to give
/// up, which takes the kernel about 15 minutes; the lane would stand still all
/// that time although the server dropped the session long before.
func withDeadline<T: Sendable>(
    _ deadline: @escaping @Sendable () -> ContinuousClock.Instant,
    ticker: DeadlineTicker? = nil,
    orElse exceeded: @escaping @Sendable () -> any Error,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            while true {
                let limit = deadline()
                if ContinuousClock.now >= limit { throw exceeded() }
                if let ticker {
                    try await ticker.nextTick()
                } else {
                    try await Task.sleep(until: min(limit, .now + .seconds(1)), clock: .continuous)
                }
            }
        }
        defer { group.cancelAll() }
        // Only the body returns a value; the watch ends by throwing.
        guard let value = try await group.next() ?? nil else { throw CancellationError() }
        return value
    }
}

/// `withDeadline` with a fixed time limit from now.
func withDeadline<T: Sendable>(
    in limit: Duration,
    orElse exceeded: @escaping @Sendable () -> DeadlineExceeded,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let deadline = ContinuousClock.now + limit
    return try await withDeadline({ deadline }, orElse: exceeded, body)
}

/// `withDeadline` for a background statement (a report, a look): given up,
/// it throws that `operation` had no answer from the database in time.
func withDeadline<T: Sendable>(
    in limit: Duration, for operation: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withDeadline(in: limit, orElse: {
        DeadlineExceeded(operation: operation, reason: "no answer from the database in time")
    }, body)
}
