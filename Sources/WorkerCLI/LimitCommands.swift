import ArgumentParser
import Foundation
import WorkerEngine

struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits", abstract: "Fleet-wide limits: at most N jobs of a queue in flight, or claimed per second.",
        discussion: """
            A limited queue's claims, from every workerd of the fleet, take no more jobs than its limits leave, \
            so that what its handlers call sees no more. --max-in-flight: at most N of its jobs hold a live lease \
            at once (Lambda's reserved concurrency, SQS's maximum concurrency); jobs leased before it was set count \
            from their next claim. --max-per-second: at most R jobs claimed a second, in bursts of up to --burst \
            (a token bucket); every attempt takes a token, retries included. workerd --queue-concurrency bounds \
            one process's lanes instead.
            """,
        subcommands: [LimitsListCommand.self, LimitsSetCommand.self, LimitsRemoveCommand.self])
}

/// A rate as an operator wrote it: 20, not 20.0.
func rateText(_ perSecond: Double) -> String {
    perSecond == perSecond.rounded() && abs(perSecond) < 1e15 ? "\(Int(perSecond))" : "\(perSecond)"
}

struct LimitsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the limits with the jobs in flight and the tokens left under each.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let limits = try await database.withClient { client, logger in
            try await QueueLimits(client: client, logger: logger).list()
        }
        if json { return try JSONOutput.print(limits) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["QUEUE", "MAX_IN_FLIGHT", "IN_FLIGHT", "MAX_PER_SECOND", "BURST", "TOKENS", "SET_AT", "SET_BY"],
            rows: limits.map {
                [$0.queue, $0.maxInFlight.map { "\($0)" } ?? "-", $0.inFlight.map { "\($0)" } ?? "-",
                 $0.maxPerSecond.map(rateText) ?? "-", $0.burst.map { "\($0)" } ?? "-",
                 // Down: a claim takes whole tokens only.
                 $0.tokens.map { String(format: "%.1f", ($0 * 10).rounded(.down) / 10) } ?? "-",
                 time.string(from: $0.setAt), $0.setBy]
            }))
        if limits.isEmpty { print("(no limits)") }
    }
}

struct LimitsSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set or change a queue's limits; they hold from every worker's next claim.",
        discussion: """
            Only the limits given change: `limits set billing --max-per-second 20` keeps billing's --max-in-flight, \
            and a --burst given before. A new rate starts with a full bucket; a rate changed keeps its bucket's \
            level, so that setting the same limits again grants no burst.
            """)

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue to limit.") var queue: String
    @Option(parsing: .unconditional, help: "Jobs of the queue that may hold a lease at once, fleet-wide (1 or more).")
    var maxInFlight: Int?
    @Option(parsing: .unconditional, help: "Jobs of the queue claimed per second, fleet-wide, e.g. 20 or 0.5.")
    var maxPerSecond: Double?
    @Option(parsing: .unconditional, help: "With --max-per-second: the most claimed at once after a quiet spell (default: the burst given before, else a second's worth of the rate).")
    var burst: Int?

    func validate() throws {
        guard !queue.isEmpty, queue.count <= 128 else { throw ValidationError("QUEUE must have 1 to 128 characters") }
        if burst != nil && maxPerSecond == nil { throw ValidationError("--burst needs --max-per-second") }
        guard maxInFlight != nil || maxPerSecond != nil else {
            throw ValidationError("give --max-in-flight, --max-per-second or both")
        }
        if let maxInFlight, !(1...Int(Int32.max)).contains(maxInFlight) {
            throw ValidationError("--max-in-flight must be in 1...\(Int32.max), not \(maxInFlight)")
        }
        if let maxPerSecond, !(maxPerSecond > 0 && maxPerSecond <= QueueLimits.Rate.highest) {
            throw ValidationError(
                "--max-per-second must be more than 0 and at most \(rateText(QueueLimits.Rate.highest)), not \(rateText(maxPerSecond))"
                + (maxPerSecond == 0 ? " (to stop a queue, workerctl pause)" : ""))
        }
        if let burst, !(1...Int(Int32.max)).contains(burst) {
            throw ValidationError("--burst must be in 1...\(Int32.max), not \(burst)")
        }
    }

    func run() async throws {
        let (queue, maxInFlight) = (self.queue, self.maxInFlight)
        let rate = maxPerSecond.map { QueueLimits.Rate(perSecond: $0, burst: burst) }
        let (limit, note) = try await database.withClient { client, logger in
            (try await QueueLimits(client: client, logger: logger).set(queue, maxInFlight: maxInFlight, rate: rate),
             try await unknownQueueNote(queue, client: client, logger: logger))
        }
        let limits = [limit.maxInFlight.map { "\($0) jobs in flight" },
                      limit.maxPerSecond.flatMap { rate in limit.burst.map { "\(rateText(rate)) jobs a second (bursts of \($0))" } }].compactMap { $0 }
        print("queue '\(queue)' limited to \(limits.joined(separator: " and "))")
        if let note { print(note) }
    }
}

struct LimitsRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove a queue's limits, or one of them; its workers are woken at once.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The queue whose limits to remove.") var queue: String
    @Flag(help: "Remove the limit on jobs in flight (without either flag: both limits).") var maxInFlight = false
    @Flag(help: "Remove the rate (without either flag: both limits).") var maxPerSecond = false

    func run() async throws {
        let queue = self.queue
        let limits: QueueLimits.Selection = maxInFlight == maxPerSecond ? .all : maxInFlight ? .maxInFlight : .rate
        let removed = try await database.withClient { client, logger in
            try await QueueLimits(client: client, logger: logger).remove(queue, limits)
        }
        let what = switch limits {
        case .maxInFlight: "limit on jobs in flight"
        case .rate: "rate limit"
        default: "limits"
        }
        guard removed else { throw CommandFailure("queue '\(queue)' has no \(limits == .all ? "limit" : what)") }
        print("removed the \(what) of queue '\(queue)'")
    }
}
