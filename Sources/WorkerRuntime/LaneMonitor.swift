import Synchronization
import WorkerEngine

/// What each lane is doing: claiming (since when) or processing a batch
/// (and which attempt, since when). The lane's deadline follows it, and the
/// watchdog uses it to tell a worker whose claim loop is stuck (a hung
/// connection, a lock it waits on forever) from one that is busy processing or idle.
final class LaneMonitor: Sendable {
    enum Step: Sendable {
        /// Waiting for a connection or for the claim's answer.
        case claiming(since: ContinuousClock.Instant)
        case processing(Batch)
    }

    struct Batch: Sendable {
        let jobs: [Job]
        /// The attempt running now, if any has started.
        var attempt: Attempt?
    }

    struct Attempt: Sendable {
        let job: Job
        /// Its kind's; `nil`: no limit.
        let timeout: Duration?
        let since: ContinuousClock.Instant
    }

    private let steps = Mutex<[Int: Step]>([:])

    func claiming(_ lane: Int) { steps.withLock { $0[lane] = .claiming(since: .now) } }
    func processing(_ lane: Int, batch jobs: [Job]) { steps.withLock { $0[lane] = .processing(Batch(jobs: jobs)) } }
    func attemptStarted(_ lane: Int, job: Job, timeout: Duration?) {
        steps.withLock { steps in
            guard case .processing(var batch) = steps[lane] else { return }
            batch.attempt = Attempt(job: job, timeout: timeout, since: .now)
            steps[lane] = .processing(batch)
        }
    }
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
