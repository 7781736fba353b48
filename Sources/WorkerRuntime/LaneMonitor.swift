import Synchronization

/// When each lane began the claim it is waiting on, so that the watchdog can
/// tell a worker whose claim loop is stuck (a hung connection, a lock it waits
/// on forever) from one that is busy processing or idle.
final class LaneMonitor: Sendable {
    private let claims = Mutex<[Int: ContinuousClock.Instant]>([:])

    func claiming(_ lane: Int) { claims.withLock { $0[lane] = .now } }
    func claimed(_ lane: Int) { claims.withLock { _ = $0.removeValue(forKey: lane) } }

    /// Lanes whose current claim has lasted longer than `limit`.
    func stuck(after limit: Duration) -> [Int] {
        let now = ContinuousClock.now
        return claims.withLock { $0.filter { now - $0.value > limit }.keys.sorted() }
    }
}
