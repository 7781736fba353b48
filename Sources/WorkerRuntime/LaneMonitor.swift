import Synchronization

/// What each lane is doing: claiming (since when) or processing a batch.
/// The lane's deadline follows it, and the watchdog uses it to tell a worker
/// whose claim loop is stuck (a hung connection, a lock it waits on forever)
/// from one that is busy processing or idle.
final class LaneMonitor: Sendable {
    enum Step: Sendable, Equatable {
        /// Waiting for a connection or for the claim's answer.
        case claiming(since: ContinuousClock.Instant)
        case processing
    }

    private let steps = Mutex<[Int: Step]>([:])

    func claiming(_ lane: Int) { steps.withLock { $0[lane] = .claiming(since: .now) } }
    func processing(_ lane: Int) { steps.withLock { $0[lane] = .processing } }
    func idle(_ lane: Int) { steps.withLock { _ = $0.removeValue(forKey: lane) } }

    /// What `lane` does now; nil while it waits for work.
    func step(of lane: Int) -> Step? { steps.withLock { $0[lane] } }

    /// Lanes whose current claim has lasted longer than `limit`.
    func stuck(after limit: Duration) -> [Int] {
        let now = ContinuousClock.now
        return steps.withLock { steps in
            steps.compactMap { lane, step in
                if case .claiming(let since) = step, now - since > limit { return lane }
                return nil
            }.sorted()
        }
    }
}
