import ArgumentParser
import Foundation
import WorkerEngine

struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "Show the fleet's workers: running, stopping, or gone silent, with their leases and throughput.",
        discussion: """
            Each workerd reports itself every 10 seconds and removes itself when it stops. One not heard from for \
            30 seconds (killed, stalled or cut off) is shown as gone; its jobs come back when their leases expire. \
            Rows unseen for a day are deleted.
            """)

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let workers = try await database.withClient { client, logger in
            try await WorkerRegistry(client: client, logger: logger).list()
        }
        if json { return try JSONOutput.print(workers) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["WORKER", "HOST", "PID", "VERSION", "QUEUES", "LANES", "BATCH", "LEASES", "FINISHED", "DONE/MIN", "STARTED",
                     "LAST_SEEN", "STATE"],
            rows: workers.map {
                [$0.id, $0.host, "\($0.pid)", $0.version ?? "-", $0.queues.joined(separator: ","), "\($0.concurrency)",
                 "\($0.batchSize)", "\($0.leases)", "\($0.finished)", "\($0.doneLastMinute)", time.string(from: $0.startedAt),
                 String(format: "%.0fs ago", $0.silentSeconds), $0.state.rawValue]
            }))
        if workers.isEmpty { print("(no workers have reported)") }
    }
}
