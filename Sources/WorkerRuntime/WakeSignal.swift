import Synchronization

/// Wakes idle lanes when jobs arrive, one per signal. A lane notes the
/// generation before it claims; if a signal came since, its wait returns at
/// once, so a notification that lands between an empty claim and the wait is
/// not missed.
///
/// One lane, not all: a notification stands for one INSERT statement, most
/// often of a few jobs, and waking every idle lane for it sent them all to
/// claim it, nine of ten claims finding nothing (two workers taking 300 jobs/s
/// each kept both cores busy). A lane that claims a full batch wakes the next
/// (see `Worker`), so a burst still brings in every lane, a claim apart.
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

    /// How many lanes wait right now.
    var waiting: Int { state.withLock { $0.waiters.count } }

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

    /// Wakes the lane that has waited longest, if one waits; a lane that
    /// waits from an older generation on returns at once.
    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.generation &+= 1
            return state.waiters.keys.min().flatMap { state.waiters.removeValue(forKey: $0) }
        }
        waiter?.resume()
    }

    /// Wakes every lane now and makes later waits return at once (shutdown).
    func close() {
        let waiters = state.withLock { state in
            state.closed = true
            state.generation &+= 1
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume() }
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
