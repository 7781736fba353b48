import Metrics

/// Every metric the worker emits, named as Prometheus shows them. They go
/// through swift-metrics: without a bootstrapped backend they cost nothing
/// and go nowhere.
public enum JobMetrics {
    /// Jobs claimed, by queue.
    public static let claimed = "worker_jobs_claimed_total"
    /// Jobs by queue, kind and outcome: done, duplicate, rejected, retried,
    /// snoozed, dead_lettered, lease_lost, released.
    public static let outcomes = "worker_jobs_total"
    /// Dead letters by queue, kind and reason.
    public static let deadLetters = "worker_dead_letters_total"
    /// Time in the handler, by kind (a histogram).
    public static let handlerDuration = "worker_handler_duration_seconds"
    /// Batches that failed as a whole (connection lost, database down).
    public static let batchErrors = "worker_batch_errors_total"
    /// Leases this worker holds now.
    public static let leasesHeld = "worker_leases_held"
    /// Heartbeats that could not extend the leases (database unreachable).
    public static let heartbeatFailures = "worker_heartbeat_failures_total"
    /// Lanes whose claim has been waiting longer than the watchdog allows.
    public static let lanesStuck = "worker_lanes_stuck"
    /// 1, labelled with the release (`ProductVersion.number`): which versions
    /// the fleet runs, as Prometheus's `*_build_info` convention has it.
    public static let buildInfo = "worker_build_info"
    /// Connections the worker's pool may open.
    public static let poolConnections = "worker_pool_max_connections"
    /// Per queue, sampled from the database every few seconds.
    public static let queueReady = "worker_queue_ready_jobs"
    public static let queueInFlight = "worker_queue_in_flight_jobs"
    public static let queueDelayed = "worker_queue_delayed_jobs"
    public static let queueBlocked = "worker_queue_blocked_jobs"
    /// The queue's fleet-wide limit on jobs in flight (`workerctl limits`); 0 without one.
    public static let queueMaxInFlight = "worker_queue_max_in_flight"
    /// The queue's fleet-wide limit on jobs claimed per second; 0 without one.
    public static let queueMaxPerSecond = "worker_queue_max_per_second"
    public static let queueDead = "worker_queue_dead_letters"
    /// The age of the oldest ready job: ApproximateAgeOfOldestMessage.
    public static let queueOldestAge = "worker_queue_oldest_ready_age_seconds"
    public static let queuePaused = "worker_queue_paused"
    /// Attempts this worker abandoned at their kind's timeout.
    public static let attemptTimeouts = "worker_attempt_timeouts_total"
    /// Runs of each schedule this worker enqueued.
    public static let scheduledRuns = "worker_scheduled_runs_total"
    /// Runs of each schedule this worker skipped, as the last run's job still waited.
    public static let scheduledRunsSkipped = "worker_scheduled_runs_skipped_total"
    /// Schedules whose cron or time zone cannot run (the fleet's, sampled like the queues).
    public static let schedulesBroken = "worker_schedules_broken"

    /// Records the handler times of a committed batch run (a run that was
    /// rolled back ran its handlers again, and those are the times that count).
    static func recordHandlerTimes(_ times: [HandlerTime]) {
        for time in times {
            Timer(label: handlerDuration, dimensions: [("kind", time.kind)]).recordNanoseconds(time.duration.nanoseconds)
        }
    }
}

/// How long one handler call took.
struct HandlerTime: Sendable {
    let kind: String
    let duration: Duration
}

extension Duration {
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
