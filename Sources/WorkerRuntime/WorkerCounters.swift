import Synchronization
import WorkerEngine

/// What a worker has done since it started, by outcome.
public struct WorkerTotals: Sendable, Equatable {
    public var claimed = 0
    public var done = 0
    public var retried = 0
    public var deadLettered = 0
    public var leaseLost = 0
    public var released = 0
    public var duplicates = 0
    public var rejected = 0
    public var batchErrors = 0

    /// Jobs that left the queue one way or another.
    public var finished: Int { done + duplicates + rejected + deadLettered }
}

final class WorkerCounters: Sendable {
    private let totals = Mutex(WorkerTotals())

    var snapshot: WorkerTotals { totals.withLock { $0 } }

    func claimed(_ count: Int) { totals.withLock { $0.claimed += count } }
    func batchFailed() { totals.withLock { $0.batchErrors += 1 } }

    func record(_ outcomes: [JobOutcome]) {
        totals.withLock { totals in
            for outcome in outcomes {
                switch outcome {
                case .done: totals.done += 1
                case .retried: totals.retried += 1
                case .deadLettered: totals.deadLettered += 1
                case .leaseLost: totals.leaseLost += 1
                case .released: totals.released += 1
                case .duplicate: totals.duplicates += 1
                case .rejected: totals.rejected += 1
                }
            }
        }
    }
}
