import ArgumentParser
import Foundation
import WorkerEngine

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Stop every worker of the fleet from claiming a queue's jobs (producers can still enqueue).",
        discussion: "Batches already claimed finish. `workerctl stats` shows the queue as paused until `workerctl resume`.")

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
