import Foundation
import WorkerEngine

/// How one `workerd` process works its queues.
public struct WorkerConfiguration: Sendable {
    /// Queues this worker claims from, served in turn.
    public var queues: [String]
    /// Lanes shared by the queues without lanes of their own, each taking
    /// them in turn; a lane processes one batch at a time on one connection.
    public var concurrency: Int
    /// Queues with lanes of their own (`--queue-concurrency billing=4`), each
    /// serving that queue alone: a bulkhead, so that a queue of slow or
    /// hanging jobs cannot take every lane from the others.
    public var queueConcurrency: [String: Int] = [:]
    /// Jobs claimed per batch and committed together.
    public var batchSize: Int
    /// How long a claimed job stays invisible to other workers before it is
    /// considered lost; the heartbeat extends it while the worker is alive.
    public var visibilityTimeout: Duration
    /// Idle workers look for due jobs this often even without a notification
    /// (retries and scheduled jobs become due without an INSERT), on average:
    /// each wait is drawn from 0.75 to 1.25 of it.
    public var pollInterval: Duration
    /// How long a stopping worker may take to finish its current jobs.
    public var stopTimeout: Duration
    /// Written to `leased_by`: who holds a lease.
    public var workerID: String
    /// How often this worker sweeps expired idempotency keys (one sweep runs
    /// at a time across the fleet); `nil` leaves it to `workerctl sweep`.
    public var sweepInterval: Duration? = .seconds(300)
    /// How often queue gauges are read from the database for the metrics
    /// endpoint; `nil` (no endpoint) reads nothing.
    public var metricsInterval: Duration? = nil
    /// How often the worker reports itself in `worker.workers` (a stop is
    /// reported at once); tests lengthen it to tell the two apart.
    var presenceInterval = WorkerRegistry.reportInterval
    /// How long the database may stay silent (no claim or heartbeat answered)
    /// before a batch is abandoned by closing its connection: a dead link
    /// otherwise holds a lane for TCP's ~15 minutes. Generous, so that a slow
    /// moment on a loaded host is not mistaken for a cut. A batch whose
    /// session the server dropped is abandoned at once (`BatchSessions`).
    /// Unless set, 30 s or the visibility timeout (three heartbeats) if that
    /// is longer: while every lane runs long jobs, heartbeats are all the
    /// database answers.
    public var silenceTimeout: Duration {
        get { silenceTimeoutSetting ?? max(.seconds(30), visibilityTimeout) }
        set { silenceTimeoutSetting = newValue }
    }
    private var silenceTimeoutSetting: Duration?

    public init(
        queues: [String] = ["default"], concurrency: Int = 10, batchSize: Int = 10,
        visibilityTimeout: Duration = .seconds(30), pollInterval: Duration = .seconds(1),
        stopTimeout: Duration = .seconds(25), workerID: String = WorkerConfiguration.defaultWorkerID()
    ) {
        self.queues = queues
        self.concurrency = concurrency
        self.batchSize = batchSize
        self.visibilityTimeout = visibilityTimeout
        self.pollInterval = pollInterval
        self.stopTimeout = stopTimeout
        self.workerID = workerID
    }

    /// Heartbeats run three times per visibility timeout, so a lease survives
    /// two missed beats.
    public var heartbeatInterval: Duration { visibilityTimeout / 3 }

    /// The queues of each lane: the lanes of queues with their own, in the
    /// order of `queues`, then `concurrency` lanes shared by the others (none
    /// when every queue has its own).
    public var lanes: [[String]] {
        let shared = queues.filter { queueConcurrency[$0] == nil }
        let reserved = queues.flatMap { queue in Array(repeating: [queue], count: queueConcurrency[queue] ?? 0) }
        return reserved + (shared.isEmpty ? [] : Array(repeating: shared, count: concurrency))
    }

    /// Connections the worker needs: one per lane, one each for LISTEN,
    /// heartbeats, sweeps, throughput, metrics, its presence report, the
    /// schedules and the ordering keys.
    public var connectionsNeeded: Int { lanes.count + 8 }

    /// How long a claim or a lease heartbeat may wait for its answer: an
    /// answer later than the visibility timeout finds the leases expired, and
    /// waiting on a connection the server has dropped would take TCP's quarter
    /// of an hour (pooled connections of a healed partition are such).
    public var statementDeadline: Duration { min(silenceTimeout, visibilityTimeout) }

    public static func defaultWorkerID() -> String {
        "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// Rejects settings that cannot work, naming the setting.
    public func validate() throws {
        guard !queues.isEmpty, queues.allSatisfy({ !$0.isEmpty && $0.count <= 128 }) else {
            throw ConfigurationError(setting: "--queues / WORKERD_QUEUES", "give one or more queue names of 1 to 128 characters")
        }
        guard (1...1000).contains(concurrency) else {
            throw ConfigurationError(setting: "--concurrency / WORKERD_CONCURRENCY", "\(concurrency) is not in 1...1000")
        }
        let setting = "--queue-concurrency / WORKERD_QUEUE_CONCURRENCY"
        for (queue, lanes) in queueConcurrency.sorted(by: { $0.key < $1.key }) {
            guard queues.contains(queue) else {
                throw ConfigurationError(setting: setting, "'\(queue)' is not one of --queues (\(queues.joined(separator: ",")))")
            }
            guard (1...1000).contains(lanes) else { throw ConfigurationError(setting: setting, "\(queue): \(lanes) is not in 1...1000") }
        }
        guard lanes.count <= 1000 else {
            throw ConfigurationError(setting: setting, "\(lanes.count) lanes in all (with --concurrency's): at most 1000")
        }
        guard (1...1000).contains(batchSize) else {
            throw ConfigurationError(setting: "--batch-size / WORKERD_BATCH_SIZE", "\(batchSize) is not in 1...1000")
        }
        if let sweepInterval, sweepInterval < .seconds(1) {
            throw ConfigurationError(setting: "--sweep-interval / WORKERD_SWEEP_INTERVAL", "must be at least 1s, or off")
        }
        guard visibilityTimeout >= .seconds(1) else {
            throw ConfigurationError(
                setting: "--visibility-timeout / WORKERD_VISIBILITY_TIMEOUT", "must be at least 1s")
        }
        guard pollInterval >= .milliseconds(10) else {
            throw ConfigurationError(setting: "--poll-interval / WORKERD_POLL_INTERVAL", "must be at least 10ms")
        }
        guard silenceTimeout > heartbeatInterval * 2 else {
            throw ConfigurationError(
                setting: "--silence-timeout / WORKERD_SILENCE_TIMEOUT",
                "must be longer than two lease heartbeats (a third of --visibility-timeout each: \(heartbeatInterval.milliseconds)ms)")
        }
    }
}
