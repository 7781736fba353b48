import Synchronization

/// One timer for the deadlines of all of a worker's lanes: each deadline's
/// watch waits for the next tick and checks its deadline then, so a deadline
/// is noticed at most one `period` late.
///
/// Why: a timer per deadline (a `Task.sleep` in every batch's watch) arms a
/// dispatch timer on libdispatch's manager thread and fires once more after
/// it is cancelled; with a claim and a batch deadline per batch that was 15%
/// of workerd's CPU time in a no-op drain (3.1 -> 2.65 s per 200,000 jobs,
/// three interleaved pairs).
final class DeadlineTicker: Sendable {
    let period: Duration

    private struct State {
        var nextID: UInt64 = 0
        var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// Watches cancelled before they started waiting.
        var cancelled: Set<UInt64> = []
        var running = false
    }

    private let state = Mutex(State())

    /// How many watches wait for the next tick right now.
    var waiting: Int { state.withLock { $0.waiting.count } }

    init(period: Duration) {
        self.period = period
    }

    /// Ticks every `period` until cancelled.
    func run() async {
        state.withLock { $0.running = true }
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: period)) != nil else { break }
            tick()
        }
        state.withLock { $0.running = false }
        tick()
    }

    /// Returns at the next tick, or at once when the task is cancelled. Without
    /// a running ticker (before `run` or after it) it sleeps one period itself.
    func nextTick() async throws {
        let id = state.withLock { state -> UInt64? in
            guard state.running else { return nil }
            state.nextID += 1
            return state.nextID
        }
        guard let id else { return try await Task.sleep(for: period) }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.cancelled.remove(id) != nil || !state.running { return true }
                    state.waiting[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiting = state.withLock { state -> CheckedContinuation<Void, Never>? in
                if let continuation = state.waiting.removeValue(forKey: id) { return continuation }
                state.cancelled.insert(id)
                return nil
            }
            waiting?.resume()
        }
        // A cancellation that came after the tick leaves its mark behind.
        state.withLock { _ = $0.cancelled.remove(id) }
        try Task.checkCancellation()
    }

    private func tick() {
        let woken = state.withLock { state in
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for continuation in woken { continuation.resume() }
    }
}
