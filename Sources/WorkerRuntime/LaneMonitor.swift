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
        /// Which of the lane's batches: an abandoned batch's task may still
        /// run, and must not touch the next one's attempt.
        let id: UInt64
        let jobs: [Job]
        /// The attempt running now, if one is.
        var attempt: Attempt?
        /// Outcomes of a batch without a transaction so far (see `BatchHooks.ended`).
        var ended: [JobOutcome] = []
    }

    struct Attempt: Sendable {
        /// One job's, or a batch handler's call for several.
        let jobs: [Job]
        /// Their kind's; `nil`: no limit.
        let timeout: Duration?
        let since: ContinuousClock.Instant

        /// When it times out; `nil`: never.
        var deadline: ContinuousClock.Instant? { timeout.map { since + $0 } }
    }

    private let state = Mutex<(steps: [Int: Step], lastBatch: UInt64)>(([:], 0))

    func claiming(_ lane: Int) { state.withLock { $0.steps[lane] = .claiming(since: .now) } }

    /// The lane processes `jobs`; returns the batch's id, for its attempts.
    func processing(_ lane: Int, batch jobs: [Job]) -> UInt64 {
        state.withLock { state in
            state.lastBatch += 1
            state.steps[lane] = .processing(Batch(id: state.lastBatch, jobs: jobs))
            return state.lastBatch
        }
    }

    func attemptStarted(_ lane: Int, batch id: UInt64, jobs: [Job], timeout: Duration?) {
        update(lane, batch: id) { $0.attempt = Attempt(jobs: jobs, timeout: timeout, since: .now) }
    }

    func attemptEnded(_ lane: Int, batch id: UInt64) { update(lane, batch: id) { $0.attempt = nil } }

    func ended(_ lane: Int, batch id: UInt64, _ outcome: JobOutcome) { update(lane, batch: id) { $0.ended.append(outcome) } }

    private func update(_ lane: Int, batch id: UInt64, _ change: (inout Batch) -> Void) {
        state.withLock { state in
            guard case .processing(var batch) = state.steps[lane], batch.id == id else { return }
            state.steps[lane] = nil  // the batch's arrays unshared, so that an append does not copy them
            change(&batch)
            state.steps[lane] = .processing(batch)
        }
    }

    func idle(_ lane: Int) { state.withLock { _ = $0.steps.removeValue(forKey: lane) } }

    /// What `lane` does now; nil while it waits for work.
    func step(of lane: Int) -> Step? { state.withLock { $0.steps[lane] } }

    /// Lanes whose current claim has lasted longer than `limit`.
    func stuck(after limit: Duration) -> [Int] {
        let now = ContinuousClock.now
        return state.withLock { state in
            state.steps.compactMap { lane, step in
                if case .claiming(let since) = step, now - since > limit { return lane }
                return nil
            }.sorted()
        }
    }
}
