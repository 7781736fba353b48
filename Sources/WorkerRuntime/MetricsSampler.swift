import Logging
import Metrics
import PostgresNIO
import WorkerEngine

/// Sets the gauges that are states rather than events: each queue's depth,
/// the age of its oldest ready job and whether it is paused, and the broken
/// schedules (read from the database), and this worker's leases and stuck
/// lanes.
struct MetricsSampler: Sendable {
    let worker: Worker
    let client: PostgresClient
    let interval: Duration
    let logger: Logger

    func run() async {
        Gauge(label: JobMetrics.poolConnections).record(worker.configuration.connectionsNeeded)
        Gauge(label: JobMetrics.buildInfo, dimensions: [("version", ProductVersion.number)]).record(1)
        repeat {
            await sample()
        } while (try? await Task.sleep(for: interval)) != nil
    }

    func sample() async {
        Gauge(label: JobMetrics.leasesHeld).record(worker.leasesHeld)
        Gauge(label: JobMetrics.lanesStuck).record(worker.stuckLanes(after: worker.configuration.visibilityTimeout).count)
        let queues = worker.configuration.queues
        do {
            let stats = try await QueueStats.read(client: client, queues: queues, logger: logger)
            for queue in queues {
                let found = stats.first { $0.queue == queue }
                let dimensions = [("queue", queue)]
                Gauge(label: JobMetrics.queueReady, dimensions: dimensions).record(found?.ready ?? 0)
                Gauge(label: JobMetrics.queueInFlight, dimensions: dimensions).record(found?.inFlight ?? 0)
                Gauge(label: JobMetrics.queueDelayed, dimensions: dimensions).record(found?.delayed ?? 0)
                Gauge(label: JobMetrics.queueBlocked, dimensions: dimensions).record(found?.blocked ?? 0)
                Gauge(label: JobMetrics.queueMaxInFlight, dimensions: dimensions).record(found?.maxInFlight ?? 0)
                Gauge(label: JobMetrics.queueMaxPerSecond, dimensions: dimensions).record(found?.maxPerSecond ?? 0)
                Gauge(label: JobMetrics.queueDead, dimensions: dimensions).record(found?.dead ?? 0)
                Gauge(label: JobMetrics.queueOldestAge, dimensions: dimensions).record(found?.oldestReadyAgeSeconds ?? 0)
                Gauge(label: JobMetrics.queuePaused, dimensions: dimensions).record(found?.paused == true ? 1 : 0)
            }
            let broken = try await Schedules(client: client, logger: logger).brokenCount()
            Gauge(label: JobMetrics.schedulesBroken).record(broken)
        } catch {
            logger.warning("could not sample queue metrics", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
