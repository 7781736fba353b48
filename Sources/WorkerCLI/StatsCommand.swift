import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import WorkerEngine

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show each queue's backlog, oldest job's age and throughput, each kind's outcomes, and dead letters by reason.",
        discussion: """
            Throughput is what workers finished in the last minute (they report every 10 seconds). \
            Kinds count the events applied and rejected while their idempotency keys live (24h by default).
            """)

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of tables (with --watch, one line per refresh).")
    var json = false
    @Option(help: "Only this queue; leaves out the per-kind outcomes, which are counted across queues.")
    var queue: String?
    @Flag(help: "Refresh in place until interrupted.")
    var watch = false
    @Option(parsing: .unconditional, help: "Time between refreshes with --watch, e.g. 2s.")
    var interval = "2s"

    /// The `--json` document.
    struct Report: Encodable {
        var queues: [QueueStats]
        var kinds: [KindOutcomes]
        var deadLetters: [DeadLetterCount]
    }

    func validate() throws {
        let every = try asBadArgument { try DurationParser.parse(interval, setting: "--interval") }
        guard every >= .milliseconds(100) else { throw ValidationError("--interval must be at least 100ms") }
    }

    func run() async throws {
        let every = try DurationParser.parse(interval, setting: "--interval")
        let (queue, json, watch) = (self.queue, self.json, self.watch)
        try await database.withClient { client, logger in
            repeat {
                let report = Report(
                    queues: try await QueueStats.read(client: client, queues: queue.map { [$0] }, logger: logger),
                    kinds: queue == nil ? try await KindOutcomes.read(client: client, logger: logger) : [],
                    deadLetters: try await DeadLetterCount.read(client: client, queue: queue, logger: logger))
                let text: String
                if json {
                    text = try JSONOutput.encode(report, compact: watch)
                } else {
                    // Home and clear-to-end, so that a terminal redraws in place.
                    let frame = Self.render(report)
                    text = watch ? "\u{1B}[H\u{1B}[2J\(frame)\n\nevery \(interval), at \(Date()); Ctrl-C to stop" : frame
                }
                // Unbuffered: a watcher reading a pipe sees each refresh as it happens.
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
                if watch { try await Task.sleep(for: every) }
            } while watch
        }
    }

    static func render(_ report: Report) -> String {
        var out = Table.render(
            header: ["QUEUE", "READY", "IN_FLIGHT", "DELAYED", "BLOCKED", "DEAD", "OLDEST_READY", "DONE/MIN", "RETRYING",
                     "HIGHEST_ATTEMPT", "STATE"],
            rows: report.queues.map {
                [$0.queue, "\($0.ready)", "\($0.inFlight)", "\($0.delayed)", "\($0.blocked)", "\($0.dead)",
                 $0.ready == 0 ? "-" : String(format: "%.1fs", $0.oldestReadyAgeSeconds), "\($0.finishedLastMinute)", "\($0.retrying)",
                 "\($0.highestAttempt)", ($0.paused ? "paused" : "active") + ($0.maxInFlight.map { ",limit=\($0)" } ?? "")
                    + ($0.maxPerSecond.map { ",rate=\(rateText($0))/s" } ?? "")]
            })
        if report.queues.isEmpty { out += "\n(no jobs and no dead letters)" }
        if !report.kinds.isEmpty {
            out += "\n\n" + Table.render(
                header: ["KIND", "DONE/MIN", "RETRIED/MIN", "DEAD/MIN", "COMPLETED", "REJECTED", "EXPIRED_KEYS"],
                rows: report.kinds.map {
                    [$0.kind, "\($0.doneLastMinute)", "\($0.retriedLastMinute)", "\($0.deadLetteredLastMinute)",
                     "\($0.completed)", "\($0.rejected)", "\($0.expiredKeys)"]
                })
        }
        if !report.deadLetters.isEmpty {
            let iso = ISO8601DateFormatter()
            out += "\n\n" + Table.render(
                header: ["QUEUE", "DEAD_REASON", "COUNT", "NEWEST"],
                rows: report.deadLetters.map { [$0.queue, $0.reason, "\($0.count)", iso.string(from: $0.newest)] })
        }
        return out
    }
}
