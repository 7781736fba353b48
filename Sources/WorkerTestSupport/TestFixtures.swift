import Foundation
import Synchronization
import WorkerEngine

/// A handler whose behaviour a test scripts: it records every call, then runs `body`.
public final class RecordingHandler: JobHandler {
    public typealias Body = @Sendable (Job, JobContext) async throws -> Void
    private let body: Body
    private let calls = Mutex<[Job]>([])

    public init(_ body: @escaping Body = { _, _ in }) {
        self.body = body
        self.ttl = nil
        self.writes = true
    }

    /// Tests opt in to idempotency; most test other things and send identical payloads.
    private let ttl: Duration?
    private let writes: Bool

    public init(idempotencyTTL: Duration?, writesToDatabase: Bool = true, _ body: @escaping Body = { _, _ in }) {
        self.body = body
        self.ttl = idempotencyTTL
        self.writes = writesToDatabase
    }

    public var idempotencyTTL: Duration? { ttl }
    public var writesToDatabase: Bool { writes }

    public func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        calls.withLock { $0.append(job) }
        try await body(job, context)
        return .empty
    }

    public var invocations: [Job] { calls.withLock { $0 } }
    public func invocations(of id: Int64) -> Int { calls.withLock { $0.filter { $0.id == id }.count } }
}

extension HandlerRegistry {
    /// A registry that sends `kinds` to one handler, with a fast retry policy
    /// so that tests do not wait on real backoff.
    public static func testing(
        _ handler: any JobHandler, kinds: [String] = ["test"],
        policy: RetryPolicy = RetryPolicy(base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 3, maxAge: nil)
    ) -> HandlerRegistry {
        var registry = HandlerRegistry(defaultPolicy: policy)
        for kind in kinds { registry.register(kind, handler) }
        return registry
    }
}

/// Waits for a condition the system reaches by itself (a queue drained, a
/// process started), checking every 20 ms, and fails after `timeout`. The
/// default is for the whole suite on two busy cores, where a drain that takes
/// a second alone has taken over 30.
public func eventually(
    timeout: Duration = .seconds(60), _ what: String, _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TimeoutError(what: what, timeout: timeout)
}

public struct TimeoutError: Error, CustomStringConvertible {
    public var what: String
    public var timeout: Duration
    public var description: String { "timed out after \(timeout) waiting for \(what)" }
}

/// A one-shot event a test can wait for and another task can fire: a handler
/// signals "I started", the test opens the gate when it is ready.
public final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    public func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { continuation in
            let isOpen = state.withLock { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if isOpen { continuation.resume() }
        }
    }
}
