import ArgumentParser
import Foundation
import WorkerEngine

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Stop every worker of the fleet from claiming a queue's jobs (producers can still enqueue).",
        discussion: """
            Batches already claimed finish. `workerctl stats` shows the queue as paused, and `workerctl pauses` \
            with the reason, until `workerctl resume`.
            """)

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue to pause.") var queue: String
    @Option(help: "Why, for whoever looks next (kept with who paused it in worker.queue_pauses).") var reason: String?

    func validate() throws {
        guard !queue.isEmpty, queue.count <= 128 else { throw ValidationError("QUEUE must have 1 to 128 characters") }
    }

    func run() async throws {
        let (queue, reason) = (self.queue, self.reason)
        let (paused, note) = try await database.withClient { client, logger in
            let paused = try await QueuePauses(client: client, logger: logger).pause(queue, reason: reason)
            return (paused, try await unknownQueueNote(queue, client: client, logger: logger))
        }
        print(paused ? "paused queue '\(queue)'" : "queue '\(queue)' was already paused")
        if let note { print(note) }
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Let workers claim a paused queue's jobs again; they are woken at once.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue to resume.") var queue: String

    func run() async throws {
        let queue = self.queue
        let resumed = try await database.withClient { client, logger in
            try await QueuePauses(client: client, logger: logger).resume(queue)
        }
        guard resumed else {
            throw CommandFailure("queue '\(queue)' is not paused")
        }
        print("resumed queue '\(queue)'")
    }
}

struct PausesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pauses", abstract: "List the paused queues: who paused each, when, and why.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let pauses = try await database.withClient { client, logger in
            try await QueuePauses(client: client, logger: logger).list()
        }
        if json { return try JSONOutput.print(pauses) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["QUEUE", "PAUSED_AT", "PAUSED_BY", "REASON"],
            rows: pauses.map { [$0.queue, time.string(from: $0.pausedAt), $0.pausedBy, $0.reason ?? "-"] }))
        if pauses.isEmpty { print("(no queue is paused)") }
    }
}
