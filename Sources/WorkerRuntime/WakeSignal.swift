import Synchronization

/// Wakes idle lanes when jobs arrive. A lane notes the generation before it
/// claims; if a signal came since, its wait returns at once, so a notification
/// that lands between an empty claim and the wait is not missed.
final class WakeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var timedOut: Set<UInt64> = []
        var nextID: UInt64 = 0
        var closed = false
    }

    private let state = Mutex(State())

    var generation: UInt64 { state.withLock { $0.generation } }

    /// Returns once a signal newer than `generation` arrived, the signal is
    /// closed, or `timeout` passed.
    func wait(since generation: UInt64, upTo timeout: Duration) async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            self.expire(id)
        }
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.closed || state.generation != generation || state.timedOut.remove(id) != nil { return true }
                state.waiters[id] = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        timer.cancel()
        await timer.value
        state.withLock { _ = $0.timedOut.remove(id) }
    }

    /// Wakes every waiting lane.
    func signal() {
        let waiters = state.withLock { state in
            state.generation &+= 1
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume() }
    }

    /// Wakes every lane now and makes later waits return at once (shutdown).
    func close() {
        state.withLock { $0.closed = true }
        signal()
    }

    private func expire(_ id: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
            state.timedOut.insert(id)
            return nil
        }
        waiter?.resume()
    }
}
