import NIOCore
import PostgresNIO
import Synchronization

extension PostgresClient {
    /// `withConnection`, except that `body` fails as soon as the connection
    /// closes, and cancelling the task closes the connection.
    ///
    /// Why: postgres-nio 1.33 can lend a connection the server has just closed
    /// (a restart, `pg_terminate_backend`, a network cut); a query written to
    /// it is dropped and its `await` never returns, so a worker lane would hang
    /// for good. Racing the body against the connection's close turns that
    /// into an error the lane retries. A body that loses the race can only
    /// have been using the dead session, whose transaction PostgreSQL rolls
    /// back, so giving up on it changes nothing in the database.
    public func withLiveConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try await connection.failingOnClose(body)
        }
    }
}

extension PostgresConnection {
    func failingOnClose<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let outcome = FirstOutcome<T>()
        let work = Task(executorPreference: EventLoopTaskExecutor(eventLoop)) {
            outcome.finish(await Result(catching: { try await body(self) }))
        }
        let watch = CloseWatches.shared.add(self) { outcome.finish(.failure(ConnectionClosedError())) }
        defer { CloseWatches.shared.remove(watch) }
        do {
            return try await withTaskCancellationHandler {
                try await outcome.value()
            } onCancel: {
                // postgres-nio does not abandon a statement in flight when its task
                // is cancelled; closing the connection does, and the server rolls
                // back whatever the session had not committed. Closed first: the
                // body, woken by its cancellation on the connection's event loop,
                // then finds the channel closed, where it could otherwise still
                // send a statement (an autocommitted one would commit).
                let _: EventLoopFuture<Void> = self.close()
                work.cancel()
                outcome.finish(.failure(CancellationError()))
            }
        } catch where Task.isCancelled {
            // The cancel handler closed the connection: back to the pool
            // closed, not closing. Lent out again while it closed, it failed
            // its next user's statement (a stopping worker's last throughput
            // write). The close is local and takes moments.
            try? await closeFuture.get()
            throw error
        }
    }
}

/// Who waits for which connection to close. A connection's closeFuture takes
/// callbacks and never lets go of them until it closes: one per batch would
/// pile up on a pooled connection for its whole life (a leak that grows with
/// every batch). So each connection gets one callback, which calls whoever
/// waits at that moment.
final class CloseWatches: Sendable {
    static let shared = CloseWatches()

    struct Watch: Sendable {
        fileprivate let connection: ObjectIdentifier
        fileprivate let id: UInt64
    }

    private struct State {
        var nextID: UInt64 = 0
        var waiters: [ObjectIdentifier: [UInt64: @Sendable () -> Void]] = [:]
    }

    private let state = Mutex(State())

    /// Calls `onClose` when `connection` closes, unless removed first; at
    /// once if it closed already.
    func add(_ connection: PostgresConnection, onClose: @escaping @Sendable () -> Void) -> Watch {
        let key = ObjectIdentifier(connection)
        let (watch, isFirst) = state.withLock { state in
            state.nextID += 1
            let isFirst = state.waiters[key] == nil
            state.waiters[key, default: [:]][state.nextID] = onClose
            return (Watch(connection: key, id: state.nextID), isFirst)
        }
        if isFirst {
            connection.closeFuture.whenComplete { _ in
                let waiters = self.state.withLock { $0.waiters.removeValue(forKey: key) } ?? [:]
                for onClose in waiters.values { onClose() }
            }
        }
        return watch
    }

    func remove(_ watch: Watch) {
        state.withLock { state in
            _ = state.waiters[watch.connection]?.removeValue(forKey: watch.id)
        }
    }

    /// Waiters registered now for `connection`.
    func count(for connection: PostgresConnection) -> Int {
        state.withLock { $0.waiters[ObjectIdentifier(connection)]?.count ?? 0 }
    }
}

/// The connection closed while a statement was in flight.
public struct ConnectionClosedError: Error, CustomStringConvertible {
    public var description: String { "the database connection closed while a statement was in flight" }
}

/// The first of several racing results; later ones are dropped.
private final class FirstOutcome<T: Sendable>: Sendable {
    private let state = Mutex<(result: Result<T, any Error>?, waiter: CheckedContinuation<T, any Error>?)>((nil, nil))

    func finish(_ result: Result<T, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<T, any Error>? in
                if state.result == nil { state.waiter = continuation }
                return state.result
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
