import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import WorkerEngine

/// The filters `jobs list`, `jobs cancel` and `jobs retry` share.
struct JobFilterOptions: ParsableArguments {
    @Option(help: "Only this queue.") var queue: String?
    @Option(help: "Only this job kind.") var kind: String?
    @Option(name: .customLong("id"), help: "Only this job id; repeatable.") var ids: [Int64] = []

    var isEmpty: Bool { queue == nil && kind == nil && ids.isEmpty }

    func filter(state: JobState? = nil) -> JobFilter {
        JobFilter(queue: queue, kind: kind, state: state, ids: ids.isEmpty ? nil : ids)
    }

    /// Refuses a command over every job unless `all` says so.
    func requireOne(unless all: Bool) throws {
        if isEmpty && !all { throw ValidationError("give a filter (--queue, --kind, --id) or --all") }
        if !isEmpty && all { throw ValidationError("--all means every job: give it without --queue, --kind or --id") }
    }
}

/// `--state` of `jobs list` and `jobs cancel`.
struct JobStateOption: ParsableArguments {
    @Option(help: "Only jobs in this state: ready, in_flight, delayed or blocked (behind an earlier job of its ordering key).")
    var state: String?

    func parsed() throws -> JobState? {
        try state.map {
            guard let state = JobState(rawValue: $0) else {
                throw ValidationError("--state must be ready, in_flight, delayed or blocked, not '\($0)'")
            }
            return state
        }
    }

    func validate() throws { _ = try parsed() }
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "Inspect the queue's jobs, cancel them, or retry now those waiting out a backoff.",
        subcommands: [JobsListCommand.self, JobsShowCommand.self, JobsCancelCommand.self, JobsRetryCommand.self])
}

struct JobsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List jobs by queue, priority and due time.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: JobFilterOptions
    @OptionGroup var state: JobStateOption
    @Option(parsing: .unconditional, help: "At most this many.") var limit = 50
    @Flag(help: "Print JSON instead of a table.") var json = false

    func validate() throws {
        guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be in 1...100000") }
    }

    func run() async throws {
        let (filter, limit) = (filters.filter(state: try state.parsed()), self.limit)
        let jobs = try await database.withClient { client, logger in
            try await QueuedJobs(client: client, logger: logger).list(filter, limit: limit)
        }
        if json { return try JSONOutput.print(jobs) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["ID", "QUEUE", "KIND", "STATE", "PRIORITY", "ATTEMPTS", "VISIBLE_AT", "LEASED_BY", "LAST_ERROR"],
            rows: jobs.map {
                ["\($0.id)", $0.queue, $0.kind, $0.state.rawValue, "\($0.priority)", "\($0.attempts)",
                 time.string(from: $0.visibleAt), $0.leasedBy ?? "-",
                 String(($0.lastError ?? "").prefix(80))]
            }))
        if jobs.isEmpty { print("(no jobs match)") }
    }
}

struct JobsShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one job with its payload and error history.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The job id.") var id: Int64
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let id = self.id
        guard let job = try await database.withClient({ client, logger in
            try await QueuedJobs(client: client, logger: logger).show(id: id)
        }) else {
            throw CommandFailure("no job with id \(id) (done, or see `workerctl dlq show \(id)`)")
        }
        if json { return try JSONOutput.print(job) }
        let time = ISO8601DateFormatter()
        print("""
            id:              \(job.id)
            queue:           \(job.queue)
            kind:            \(job.kind)
            state:           \(job.state.rawValue)
            priority:        \(job.priority)
            attempts:        \(job.attempts) of \(job.maxAttempts.map(String.init) ?? "the kind's maximum")
            redrive count:   \(job.redriveCount)
            idempotency key: \(job.idempotencyKey ?? "-")
            ordering key:    \(job.orderingKey ?? "-")
            job key:         \(job.jobKey ?? "-")
            created at:      \(time.string(from: job.createdAt))
            visible at:      \(time.string(from: job.visibleAt))
            leased by:       \(job.leasedBy ?? "-")
            leased at:       \(job.leasedAt.map(time.string) ?? "-")
            last error:      \(job.lastError ?? "-")
            payload:         \(job.payload)
            errors:          \(job.errors)
            """)
    }
}

struct JobsCancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Move jobs to the dead-letter table as 'cancelled'.",
        discussion: """
            Give at least one filter, or --all. Only jobs enqueued before the command started are taken. A \
            cancelled job can be redriven (`workerctl redrive --reason cancelled`) or purged. A job a worker is \
            processing right now (its transaction holds the row) is left to finish; a job leased but not yet \
            being processed is cancelled with its lease, and its worker commits nothing for it. With --id, a job \
            not cancelled is named and the exit status is 1. Cancels 1,000 per transaction; --dry-run lists and \
            changes nothing.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: JobFilterOptions
    @OptionGroup var state: JobStateOption
    @Flag(help: "Cancel every job (required when no filter is given).") var all = false
    @Option(parsing: .unconditional, help: "Cancel at most this many.") var limit: Int?
    @Option(help: "Why, kept as the dead letter's last error.") var reason: String?
    @Flag(help: "Print what would be cancelled and change nothing.") var dryRun = false
    @Flag(help: "Print JSON instead of lines.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if reason?.isEmpty == true { throw ValidationError("--reason is empty; leave it out for none") }
    }

    func run() async throws {
        let (filter, limit, dryRun) = (filters.filter(state: try state.parsed()), self.limit ?? Int.max, self.dryRun)
        let note = "cancelled with workerctl" + (reason.map { ": \($0)" } ?? "")
        let cancelled = try await database.withClient { client, logger in
            let jobs = QueuedJobs(client: client, logger: logger)
            if dryRun { return try await jobs.cancel(filter, limit: min(limit, 1_000_000), note: note, dryRun: true) }
            return try await inBatches(of: filter, upTo: limit, on: client, logger: logger) {
                try await jobs.cancel($0, limit: $1, note: note)
            }
        }
        let verb = dryRun ? "would cancel" : "cancelled"
        try report(cancelled, json: json, dryRun: dryRun, each: { "\(verb) job \($0)" },
                   total: "\(verb) \(cancelled.count) job\(cancelled.count == 1 ? "" : "s")")
        if cancelled.count < limit {  // else --limit, not absence, may have left an id out
            try requireAll(filters.ids, done: cancelled, dryRun ? "would not be cancelled" : "not cancelled",
                           "no such job (done or dead-lettered), not matching, or being processed")
        }
    }
}

struct JobsRetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Make jobs waiting out a retry's backoff ready now.",
        discussion: """
            Give at least one filter, or --all. Attempts are kept and the workers of their queues are woken. \
            Jobs waiting for their run_at (never attempted) are left for it. With --id, a job not made ready \
            is named and the exit status is 1.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: JobFilterOptions
    @Flag(help: "Every job waiting for a retry (required when no filter is given).") var all = false
    @Option(parsing: .unconditional, help: "At most this many.") var limit: Int?
    @Flag(help: "Print JSON instead of lines.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let (filter, limit) = (filters.filter(), self.limit ?? Int.max)
        let readied = try await database.withClient { client, logger in
            let jobs = QueuedJobs(client: client, logger: logger)
            return try await inBatches(of: filter, upTo: limit, on: client, logger: logger) {
                try await jobs.retryNow($0, limit: $1)
            }
        }
        try report(readied, json: json, dryRun: false, each: { "job \($0) is ready" },
                   total: "made \(readied.count) job\(readied.count == 1 ? "" : "s") ready")
        if readied.count < limit {
            try requireAll(filters.ids, done: readied, "not made ready", "no such job, not waiting for a retry, or being processed")
        }
    }
}

/// Runs `batch` (given `filter` with its cursor past the ids done, and the
/// most it may take; it answers the ids it took, ascending) until `limit`
/// are done or a batch comes back short: small transactions keep the locks
/// each holds brief. Only jobs enqueued before the start are taken, each
/// once (a job retried that fails again meanwhile waits for the next command).
private func inBatches(
    of filter: JobFilter, upTo limit: Int, on client: PostgresClient, logger: Logger,
    _ batch: (JobFilter, Int) async throws -> [Int64]
) async throws -> [Int64] {
    var done: [Int64] = [], cursor = filter
    cursor.enqueuedBy = try await DatabaseClock.now(client, logger: logger)
    while done.count < limit {
        let size = min(limit - done.count, 1000)
        let ids = try await batch(cursor, size)
        done += ids
        if ids.count < size { break }
        cursor.afterID = ids.last
    }
    return done
}

/// Prints the ids a command acted on, a line each and a total, or as JSON.
private func report(_ ids: [Int64], json: Bool, dryRun: Bool, each: (Int64) -> String, total: String) throws {
    if json { return try JSONOutput.print(JobIDs(jobs: ids, dryRun: dryRun)) }
    for id in ids { print(each(id)) }
    print(total)
}

/// Fails (exit 1) naming the ids asked for with --id that were not acted on.
func requireAll(_ asked: [Int64], done: [Int64], _ what: String, _ why: String) throws {
    let missed = Set(asked).subtracting(done).sorted()
    guard !missed.isEmpty else { return }
    throw CommandFailure("\(what): \(missed.map(String.init).joined(separator: ", ")) (\(why))")
}

private struct JobIDs: Encodable {
    let jobs: [Int64]
    let dryRun: Bool
}
