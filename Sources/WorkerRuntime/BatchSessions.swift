import Synchronization

/// The database session (backend pid) each lane's batch runs in, and the
/// sessions the server no longer has.
///
/// Why: when a partition heals, the server has long dropped the sessions of
/// the batches cut off by it (see `DatabaseConfig.deadPeerDetection`), but the
/// worker's end of those connections never hears of it: it only waits for an
/// answer and sends nothing that would draw a reset. New connections work, so
/// the heartbeat hears from the database and the silence timeout never runs
/// out; the lanes would wait for TCP's quarter of an hour. Found by the netns
/// chaos scenario. The heartbeat asks the server which of these sessions still
/// exist, and a lane whose session is gone abandons its batch at once.
final class BatchSessions: Sendable {
    private let state = Mutex<(byLane: [Int: Int32], gone: Set<Int32>)>(([:], []))

    func began(lane: Int, pid: Int32) { state.withLock { $0.byLane[lane] = pid } }

    func ended(lane: Int) {
        state.withLock { state in
            if let pid = state.byLane.removeValue(forKey: lane) { state.gone.remove(pid) }
        }
    }

    var pids: [Int32] { state.withLock { Array($0.byLane.values) } }

    /// Records which of `checked` the server still has; returns those it has not.
    func found(_ live: Set<Int32>, among checked: [Int32]) -> [Int32] {
        state.withLock { state in
            let lost = checked.filter { !live.contains($0) && state.byLane.values.contains($0) }
            state.gone.formUnion(lost)
            return lost
        }
    }

    func isGone(lane: Int) -> Bool {
        state.withLock { state in state.byLane[lane].map { state.gone.contains($0) } ?? false }
    }
}
