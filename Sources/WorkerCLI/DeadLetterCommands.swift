import ArgumentParser
import Foundation
import WorkerEngine

/// The filters `dlq list`, `dlq purge` and `redrive` share.
struct DeadLetterFilterOptions: ParsableArguments {
    @Option(help: "Only this queue.") var queue: String?
    @Option(help: "Only this job kind.") var kind: String?
    @Option(help: "Only this reason: max_attempts, non_retryable, expired, invalid_event, cancelled, ...") var reason: String?
    @Option(name: .customLong("id"), help: "Only this job id; repeatable.") var ids: [Int64] = []
    @Option(parsing: .unconditional, help: "Dead-lettered at or after: ISO 8601 time or an age like 2h.") var since: String?
    @Option(parsing: .unconditional, help: "Dead-lettered before: ISO 8601 time or an age like 30m.") var until: String?

    var isEmpty: Bool { queue == nil && kind == nil && reason == nil && ids.isEmpty && since == nil && until == nil }

    func filter() throws -> DeadLetterFilter {
        DeadLetterFilter(
            queue: queue, kind: kind, reason: reason, ids: ids.isEmpty ? nil : ids,
            since: try since.map { try TimeArgument.parse($0, option: "--since") },
            until: try until.map { try TimeArgument.parse($0, option: "--until") })
    }

    func validate() throws {
        let filter = try filter()
        if let since = filter.since, let until = filter.until, since >= until {
            throw ValidationError("--since \(self.since ?? "") is not before --until \(self.until ?? ""): no dead letter can match")
        }
    }

    /// Refuses a command over every dead letter unless `all` says so.
    func requireOne(unless all: Bool) throws {
        if isEmpty && !all {
            throw ValidationError("give a filter (--queue, --kind, --reason, --id, --since, --until) or --all")
        }
        if !isEmpty && all {
            throw ValidationError("--all means every dead letter: give it without --queue, --kind, --reason, --id, --since or --until")
        }
    }
}

struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect and purge the dead-letter table.",
        subcommands: [DLQListCommand.self, DLQShowCommand.self, DLQPurgeCommand.self])
}

struct DLQListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List dead letters, newest first.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: DeadLetterFilterOptions
    @Option(parsing: .unconditional, help: "At most this many.") var limit = 50
    @Flag(help: "Print JSON instead of a table.") var json = false

    func validate() throws {
        guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be in 1...100000") }
    }

    func run() async throws {
        let (filter, limit) = (try filters.filter(), self.limit)
        let letters = try await database.withClient { client, logger in
            try await DeadLetterQueue(client: client, logger: logger).list(filter, limit: limit)
        }
        if json { return try JSONOutput.print(letters) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["ID", "QUEUE", "KIND", "REASON", "ATTEMPTS", "REDRIVES", "FAILED_AT", "LAST_ERROR"],
            rows: letters.map {
                ["\($0.id)", $0.queue, $0.kind, $0.reason, "\($0.attempts)", "\($0.redriveCount)",
                 time.string(from: $0.failedAt), String(($0.lastError ?? "").prefix(80))]
            }))
        if letters.isEmpty { print("(no dead letters match)") }
    }
}

struct DLQShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one dead letter with its payload and error history.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The job id.") var id: Int64
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let id = self.id
        guard let letter = try await database.withClient({ client, logger in
            try await DeadLetterQueue(client: client, logger: logger).show(id: id)
        }) else {
            throw CommandFailure("no dead letter with id \(id)")
        }
        if json { return try JSONOutput.print(letter) }
        let time = ISO8601DateFormatter()
        print("""
            id:              \(letter.id)
            queue:           \(letter.queue)
            kind:            \(letter.kind)
            reason:          \(letter.reason)
            attempts:        \(letter.attempts)
            redrive count:   \(letter.redriveCount)
            idempotency key: \(letter.idempotencyKey ?? "-")
            created at:      \(time.string(from: letter.createdAt))
            failed at:       \(time.string(from: letter.failedAt))
            failed by:       \(letter.failedBy ?? "-")
            last error:      \(letter.lastError ?? "-")
            payload:         \(letter.payload)
            errors:          \(letter.errors)
            """)
    }
}

struct RedriveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redrive",
        abstract: "Move dead letters back to their queue, attempts reset and redrive count kept.",
        discussion: "Give at least one filter, or --all. Each moved job is printed; --dry-run changes nothing.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: DeadLetterFilterOptions
    @Flag(help: "Redrive every dead letter (required when no filter is given).") var all = false
    @Option(parsing: .unconditional, help: "Move at most this many.") var limit: Int?
    @Flag(help: "Print what would move and change nothing.") var dryRun = false
    @Option(parsing: .unconditional, help: "Move at most this many jobs per second.") var rate: Int?
    @Flag(help: "Print JSON instead of lines.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if let rate, rate < 1 { throw ValidationError("--rate must be at least 1 job per second") }
    }

    func run() async throws {
        let asked = try filters.filter()
        let (limit, rate, dryRun) = (self.limit ?? Int.max, self.rate, self.dryRun)
        let moved = try await database.withClient { client, logger in
            let dlq = DeadLetterQueue(client: client, logger: logger)
            if dryRun { return try await dlq.redrive(asked, limit: min(limit, 1_000_000), dryRun: true) }
            let filter = try await asked.endingBy(DatabaseClock.now(client, logger: logger))
            // Small batches keep each transaction short; the rate paces them.
            let clock = ContinuousClock()
            let start = clock.now
            var moved: [RedrivenJob] = []
            while moved.count < limit {
                let batch = min(limit - moved.count, rate ?? 1000, 1000)
                let jobs = try await dlq.redrive(filter, limit: batch)
                moved += jobs
                if jobs.count < batch { break }
                if let rate {
                    let due = start + .milliseconds(Int64(moved.count) * 1000 / Int64(rate))
                    try await Task.sleep(until: due, clock: clock)
                }
            }
            return moved
        }
        let verb = dryRun ? "would redrive" : "redrove"
        if json { try JSONOutput.print(moved) } else {
            for job in moved {
                print("\(verb) job \(job.id) queue=\(job.queue) kind=\(job.kind) reason=\(job.reason) redrive_count=\(job.redriveCount)")
            }
            print("\(verb) \(moved.count) job\(moved.count == 1 ? "" : "s")")
        }
        if moved.count < limit {  // else --limit, not absence, may have left an id out
            try requireAll(filters.ids, done: moved.map(\.id), dryRun ? "would not be redriven" : "not redriven",
                           "no such dead letter, or not matching the other filters")
        }
    }
}

struct DLQPurgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge", abstract: "Delete dead letters for good.",
        discussion: """
            Give at least one filter, or --all; e.g. --until 30d keeps the last 30 days. Deletes 1,000 per \
            transaction; --dry-run counts and changes nothing.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: DeadLetterFilterOptions
    @Flag(help: "Purge every dead letter (required when no filter is given).") var all = false
    @Option(parsing: .unconditional, help: "Delete at most this many.") var limit: Int?
    @Flag(help: "Count what would go and change nothing.") var dryRun = false
    @Flag(help: "Print JSON instead of a line.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        // An age of 0 is now: a retention of 0 read as "keep forever" would purge everything.
        if let until = filters.until, (try? DurationParser.parse(until, setting: "--until")) == .zero {
            throw ValidationError("--until \(until) matches every dead letter up to now: leave --until out, or give --all alone")
        }
    }

    func run() async throws {
        let asked = try filters.filter()
        let (limit, dryRun) = (self.limit ?? Int.max, self.dryRun)
        let ids = filters.ids
        let (purged, found) = try await database.withClient { client, logger in
            let dlq = DeadLetterQueue(client: client, logger: logger)
            // With --id, the ids that match, so that one not found is named.
            let found = ids.isEmpty ? [] : try await dlq.list(asked, limit: ids.count).map(\.id)
            if dryRun { return (try await dlq.purge(asked, limit: limit, dryRun: true), found) }
            let filter = try await asked.endingBy(DatabaseClock.now(client, logger: logger))
            // Small batches keep each transaction, and the locks it holds, short.
            var purged = 0
            while purged < limit {
                let batch = min(limit - purged, 1000)
                let count = try await dlq.purge(filter, limit: batch)
                purged += count
                if count < batch { break }
            }
            return (purged, found)
        }
        if json { try JSONOutput.print(PurgeResult(purged: purged, dryRun: dryRun)) } else {
            print("\(dryRun ? "would purge" : "purged") \(purged) dead letter\(purged == 1 ? "" : "s")")
        }
        if purged < limit {
            try requireAll(ids, done: found, dryRun ? "would not be purged" : "not purged",
                           "no such dead letter, or not matching the other filters")
        }
    }
}

private struct PurgeResult: Encodable {
    let purged: Int
    let dryRun: Bool
}

extension DeadLetterFilter {
    /// This filter, also ending at `start` (see `DatabaseClock`).
    func endingBy(_ start: Date) -> DeadLetterFilter {
        var filter = self
        filter.until = min(until ?? start, start)
        return filter
    }
}
