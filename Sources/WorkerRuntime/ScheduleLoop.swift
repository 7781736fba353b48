import Logging
import Metrics
import WorkerEngine

/// Enqueues the schedules' due runs every `interval` while the worker runs.
/// Every worker of the fleet does; each run is enqueued by one of them.
struct ScheduleLoop: Sendable {
    let schedules: Schedules
    let interval: Duration
    /// How long a look may wait for the database (see `ThroughputReporter`).
    let deadline: Duration
    let logger: Logger

    /// Looks until cancelled.
    func run() async {
        repeat {
            await look()
        } while (try? await Task.sleep(for: interval)) != nil
    }

    func look() async {
        let schedules = schedules
        do {
            let runs = try await withDeadline(in: deadline, for: "schedules") {
                try await schedules.enqueueDue()
            }
            for run in runs.enqueued {
                Counter(label: JobMetrics.scheduledRuns, dimensions: [("schedule", run.name)]).increment()
                logger.info("scheduled job enqueued", metadata: [
                    "schedule": "\(run.name)", "run_at": "\(run.runAt)", "job": "\(run.jobID)",
                ])
            }
            for run in runs.skipped {
                Counter(label: JobMetrics.scheduledRunsSkipped, dimensions: [("schedule", run.name)]).increment()
                logger.info("scheduled run skipped: the schedule's last job still waits", metadata: [
                    "schedule": "\(run.name)", "run_at": "\(run.runAt)",
                ])
            }
            for broken in runs.broken {
                logger.error("schedule cannot run; fix its cron or time zone", metadata: [
                    "schedule": "\(broken.name)", "error": "\(broken.error)",
                ])
            }
        } catch is CancellationError {
            return  // the worker stops
        } catch {
            logger.warning("could not enqueue due schedules; will retry", metadata: [
                "error": "\(String(reflecting: error))",
            ])
        }
    }
}
