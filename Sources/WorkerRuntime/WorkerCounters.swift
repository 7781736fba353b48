import Metrics
import Synchronization
import WorkerEngine

/// What a worker has done since it started, by outcome.
public struct WorkerTotals: Sendable, Equatable {
    public var claimed = 0
    public var done = 0
    public var retried = 0
    public var snoozed = 0
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
    private struct State {
        var totals = WorkerTotals()
        /// Outcomes by queue and kind since the last `takeTallies()`.
        var tallies: [Throughput.Key: ThroughputTally] = [:]
    }

    private let state = Mutex(State())

    var snapshot: WorkerTotals { state.withLock { $0.totals } }

    func claimed(_ count: Int, from queue: String) {
        state.withLock { $0.totals.claimed += count }
        Counter(label: JobMetrics.claimed, dimensions: [("queue", queue)]).increment(by: count)
    }

    func attemptsTimedOut(_ jobs: [Job]) {
        for job in jobs {
            Counter(label: JobMetrics.attemptTimeouts, dimensions: [("queue", job.queue), ("kind", job.kind)]).increment()
        }
    }

    func batchFailed() {
        state.withLock { $0.totals.batchErrors += 1 }
        Counter(label: JobMetrics.batchErrors).increment()
    }

    /// Hands over the tallies gathered since the last call.
    func takeTallies() -> [Throughput.Key: ThroughputTally] {
        state.withLock { state in
            defer { state.tallies = [:] }
            return state.tallies
        }
    }

    /// Puts back tallies that could not be written, to try again with the next ones.
    func restore(_ tallies: [Throughput.Key: ThroughputTally]) {
        state.withLock { state in
            for (key, tally) in tallies { state.tallies[key, default: ThroughputTally()] += tally }
        }
    }

    func record(_ outcomes: [JobOutcome], of jobs: [Job]) {
        let kinds = Dictionary(jobs.map { ($0.id, Throughput.Key(queue: $0.queue, kind: $0.kind)) }, uniquingKeysWith: { a, _ in a })
        state.withLock { state in
            for outcome in outcomes {
                switch outcome {
                case .done: state.totals.done += 1
                case .retried: state.totals.retried += 1
                case .snoozed: state.totals.snoozed += 1
                case .deadLettered: state.totals.deadLettered += 1
                case .leaseLost: state.totals.leaseLost += 1
                case .released: state.totals.released += 1
                case .duplicate: state.totals.duplicates += 1
                case .rejected: state.totals.rejected += 1
                }
                if let key = kinds[outcome.jobID] { state.tallies[key, default: ThroughputTally()].add(outcome) }
            }
        }
        // One counter per label set, not per job: each is looked up in the
        // metrics factory under its lock.
        var counts: [CounterLabels: Int] = [:]
        for outcome in outcomes {
            guard let key = kinds[outcome.jobID] else { continue }
            counts[CounterLabels(label: JobMetrics.outcomes, key: key, name: "outcome", value: outcome.metricName), default: 0] += 1
            if case .deadLettered(_, let reason) = outcome {
                counts[CounterLabels(label: JobMetrics.deadLetters, key: key, name: "reason", value: reason.rawValue), default: 0] += 1
            }
        }
        for (labels, count) in counts {
            Counter(label: labels.label, dimensions: [
                ("queue", labels.key.queue), ("kind", labels.key.kind), (labels.name, labels.value),
            ]).increment(by: count)
        }
    }
}

private struct CounterLabels: Hashable {
    let label: String
    let key: Throughput.Key
    let name: String
    let value: String
}

extension JobOutcome {
    /// The `outcome` label of `worker_jobs_total`.
    var metricName: String {
        switch self {
        case .done: "done"
        case .duplicate: "duplicate"
        case .rejected: "rejected"
        case .retried: "retried"
        case .snoozed: "snoozed"
        case .deadLettered: "dead_lettered"
        case .leaseLost: "lease_lost"
        case .released: "released"
        }
    }
}
