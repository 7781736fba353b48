import ArgumentParser
import Foundation
import WorkerEngine

struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits", abstract: "Fleet-wide concurrency limits: at most N jobs of a queue in flight at once.",
        discussion: """
            A limited queue's claims, from every workerd of the fleet, take no more jobs than its limit leaves: \
            at most N of its jobs hold a live lease at once (Lambda's reserved concurrency, SQS's maximum \
            concurrency), so that what its handlers call sees no more. Jobs leased before a limit was set count \
            from their next claim. workerd --queue-concurrency bounds one process's lanes instead.
            """,
        subcommands: [LimitsListCommand.self, LimitsSetCommand.self, LimitsRemoveCommand.self])
}

struct LimitsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the limits with the jobs in flight under each.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let limits = try await database.withClient { client, logger in
            try await QueueLimits(client: client, logger: logger).list()
        }
        if json { return try JSONOutput.print(limits) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["QUEUE", "MAX_IN_FLIGHT", "IN_FLIGHT", "SET_AT", "SET_BY"],
            rows: limits.map { [$0.queue, "\($0.maxInFlight)", "\($0.inFlight)", time.string(from: $0.setAt), $0.setBy] }))
        if limits.isEmpty { print("(no limits)") }
    }
}

struct LimitsSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set or change a queue's limit; it holds from every worker's next claim.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue to limit.") var queue: String
    @Option(help: "Jobs of the queue that may hold a lease at once, fleet-wide (1 or more).") var maxInFlight: Int

    func validate() throws {
        guard !queue.isEmpty, queue.count <= 128 else { throw ValidationError("QUEUE must have 1 to 128 characters") }
        guard (1...Int(Int32.max)).contains(maxInFlight) else {
            throw ValidationError("--max-in-flight must be in 1...\(Int32.max), not \(maxInFlight)")
        }
    }

    func run() async throws {
        let (queue, maxInFlight) = (self.queue, self.maxInFlight)
        let note = try await database.withClient { client, logger in
            try await QueueLimits(client: client, logger: logger).set(queue, maxInFlight: maxInFlight)
            return try await unknownQueueNote(queue, client: client, logger: logger)
        }
        print("queue '\(queue)' limited to \(maxInFlight) jobs in flight")
        if let note { print(note) }
    }
}

struct LimitsRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove a queue's limit; its workers are woken at once.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue whose limit to remove.") var queue: String

    func run() async throws {
        let queue = self.queue
        let removed = try await database.withClient { client, logger in
            try await QueueLimits(client: client, logger: logger).remove(queue)
        }
        guard removed else { throw CommandFailure("queue '\(queue)' has no limit") }
        print("removed the limit of queue '\(queue)'")
    }
}
