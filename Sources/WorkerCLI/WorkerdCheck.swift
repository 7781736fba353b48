import ArgumentParser
import Foundation
import Logging
import WorkerEngine
import WorkerRuntime

/// `workerd --check`, as `nginx -t` or `sshd -t`: the settings in force and
/// whether the database is ready for them, before a deploy or in
/// `ExecStartPre=`. Exits 0 when workerd would start and work, 78 for a bad
/// setting (before this runs), 1 when the database is unreachable or its
/// schema too old.
extension WorkerdCommand.Settings {
    func check() async throws {
        print(Table.render(header: ["SETTING", "VALUE"], rows: summary))
        let logger = {
            var logger = Logger(label: "workerd")
            logger.logLevel = .error
            return logger
        }()
        do {
            try await database.probe(logger: logger)
            let (version, pauses, limits) = try await withPostgresClient(
                try database.clientConfiguration(maximumConnections: 1), logger: logger
            ) { client in
                (try await Migrator(client: client, logger: logger).checkSchema(),
                 try await QueuePauses(client: client, logger: logger).list(),
                 try await QueueLimits(client: client, logger: logger).list())
            }
            print("database: reachable, schema at version \(version); workerd would start")
            // What the fleet has set for these queues, which holds their claims whatever this workerd's settings.
            for queue in worker.queues {
                let limit = limits.first { $0.queue == queue }
                let bounds = [limit?.maxInFlight.map { "\($0) in flight" },
                              limit?.maxPerSecond.map { "\(rateText($0)) claimed a second" }].compactMap { $0 }
                let held = [pauses.contains { $0.queue == queue } ? "paused (workerctl resume)" : nil,
                            bounds.isEmpty ? nil : "at most \(bounds.joined(separator: " and ")) across the fleet (workerctl limits)",
                ].compactMap { $0 }
                if !held.isEmpty { print("queue \(queue): \(held.joined(separator: ", "))") }
            }
        } catch {
            FileHandle.standardError.write(Data("workerd --check: \(errorText(error))\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Each setting as it is in force, defaults and derived values included.
    var summary: [[String]] {
        let lanes = worker.lanes
        let shared = worker.queues.filter { worker.queueConcurrency[$0] == nil }
        var rows = [
            ["database", database.redactedURL],
            ["queues", worker.queues.joined(separator: ",")],
            ["lanes", "\(lanes.count): "
                + (worker.queues.compactMap { q in worker.queueConcurrency[q].map { "\($0) for \(q)" } }
                    + (shared.isEmpty ? [] : ["\(worker.concurrency) shared by \(shared.joined(separator: ","))"]))
                    .joined(separator: ", ")],
            ["batch size", "\(worker.batchSize)"],
            ["connections", "up to \(worker.connectionsNeeded)"],
            ["visibility timeout", "\(worker.visibilityTimeout.settingText) (a heartbeat every \(worker.heartbeatInterval.settingText))"],
            ["silence timeout", worker.silenceTimeout.settingText],
            ["poll interval", worker.pollInterval.settingText],
            ["stop timeout", worker.stopTimeout.settingText],
            ["sweep interval", worker.sweepInterval?.settingText ?? "off"],
            ["metrics", metrics.map { "http://\(MetricsServer.address(host: $0.host, port: $0.port))/metrics" } ?? "off"],
            ["log", "\(logLevel), \(logFormat)"],
            ["worker id", worker.workerID == WorkerConfiguration.defaultWorkerID()
                ? "HOST:PID, each process its own (the default)" : worker.workerID],
        ]
        for kind in handlers.kinds {
            rows.append(["retry \(kind)", "\(handlers.policy(for: kind))"])
        }
        for kind in handlers.kinds {
            rows.append(["idempotency ttl \(kind)", handlers.idempotencyTTL(for: kind)?.settingText ?? "none"])
        }
        return rows
    }
}
