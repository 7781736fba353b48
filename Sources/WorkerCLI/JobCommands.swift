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
        commandName: "cancel", abstract: "Move jobs to the dead-letter table as 'cancelled', stopping those running.",
        discussion: """
            Give at least one filter, or --all. Only jobs enqueued before the command started are taken. A \
            cancelled job can be redriven (`workerctl redrive --reason cancelled`) or purged. A job a worker is \
            running is stopped: its worker abandons the job's batch (the server rolls back what the batch did, \
            the batch's other jobs run again) and dead-letters the job; the command waits for it up to --wait, and \
            --wait 0 leaves running jobs to finish. A job leased but not yet being processed is cancelled with its \
            lease, and its worker commits nothing for it. A running job not stopped within --wait, and with --id \
            a job not cancelled, is named and the exit status is 1. Cancels 1,000 per transaction; --dry-run \
            lists and changes nothing.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: JobFilterOptions
    @OptionGroup var state: JobStateOption
    @Flag(help: "Cancel every job (required when no filter is given).") var all = false
    @Option(parsing: .unconditional, help: "Cancel at most this many.") var limit: Int?
    @Option(help: "Why, kept as the dead letter's last error.") var reason: String?
    @Option(help: "How long to wait for running jobs' workers to stop them, e.g. 30s; 0 leaves them to finish.")
    var wait = "30s"
    @Flag(help: "Print what would be cancelled and change nothing.") var dryRun = false
    @Flag(help: "Print JSON instead of lines.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if reason?.isEmpty == true { throw ValidationError("--reason is empty; leave it out for none") }
        _ = try parsedWait()
    }

    private func parsedWait() throws -> Duration {
        let wait = try asBadArgument { try DurationParser.parse(self.wait, setting: "--wait") }
        guard wait <= .seconds(86400) else { throw ValidationError("--wait must be at most 24h") }
        return wait
    }

    func run() async throws {
        let (limit, dryRun, wait) = (self.limit ?? Int.max, self.dryRun, try parsedWait())
        let filter = filters.filter(state: try state.parsed())
        let note = "cancelled with workerctl" + (reason.map { ": \($0)" } ?? "")
        let (cancelled, running) = try await database.withClient { client, logger in
            let jobs = QueuedJobs(client: client, logger: logger)
            if dryRun {
                return (try await jobs.cancel(filter, limit: min(limit, 1_000_000), note: note, dryRun: true), RunningJobCancellation())
            }
            var stamped = filter  // the same jobs for both steps
            stamped.enqueuedBy = try await DatabaseClock.now(client, logger: logger)
            let moved = try await inBatches(of: stamped, upTo: limit, on: client, logger: logger, id: \CancelledJob.id) {
                try await jobs.cancel($0, limit: $1, note: note)
            }
            guard wait > .zero else { return (moved, RunningJobCancellation()) }
            let running = try await jobs.cancelRunning(
                stamped, limit: min(limit - moved.count, 1_000_000), leased: moved.filter(\.wasLeased).map(\.id), note: note,
                wait: wait
            ) { ids in
                // On stderr, so that the output (and --json) stays what it was.
                FileHandle.standardError.write(Data("""
                    \(ids.count) job\(ids.count == 1 ? " is" : "s are") running; asked \
                    \(ids.count == 1 ? "its worker to stop it" : "their workers to stop them") and waiting up to \(wait.settingText)\n
                    """.utf8))
            }
            return (moved, running)
        }
        let verb = dryRun ? "would cancel" : "cancelled"
        let ids = (cancelled.map(\.id) + running.cancelled).sorted()
        if json {
            try JSONOutput.print(JobIDs(
                jobs: ids, dryRun: dryRun, finished: running.finished.keys.sorted(), stillRunning: running.stillRunning))
        } else {
            for id in ids { print("\(verb) job \(id)") }
            for (id, fate) in running.finished.sorted(by: { $0.key < $1.key }) {
                print("job \(id) was not cancelled: it ended first (\(fate))")
            }
            print("\(verb) \(ids.count) job\(ids.count == 1 ? "" : "s")")
        }
        if !running.stillRunning.isEmpty {
            throw CommandFailure("""
                not stopped within \(wait.settingText), their requests withdrawn: \
                \(running.stillRunning.map(String.init).joined(separator: ", ")) (their workers run a release before \
                schema 28 or are cut off from the database, their turn in a long batch did not come, or a \
                transaction other than a worker's holds their rows)
                """)
        }
        if ids.count < limit {  // else --limit, not absence, may have left an id out
            // Those that ended first are named above.
            try requireAll(filters.ids, done: ids + Array(running.finished.keys), dryRun ? "would not be cancelled" : "not cancelled",
                           wait > .zero ? "no such job (done or dead-lettered), or not matching"
                               : "no such job (done or dead-lettered), not matching, or being processed")
            if filters.ids.contains(where: { running.finished[$0] != nil }) {
                throw CommandFailure("not cancelled: a job asked for by --id ended first")
            }
        }
    }
}

struct JobsRetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Make jobs waiting out a retry's backoff ready now.",
        discussion: """
            Give at least one filter, or --all. Attempts are kept and the workers of their queues are woken. \
            Jobs waiting for their run_at (never attempted) are left for it, unless --scheduled runs them now \
            too. With --id, a job not made ready is named and the exit status is 1.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: JobFilterOptions
    @Flag(help: "Every job waiting for a retry (required when no filter is given).") var all = false
    @Flag(help: "Also jobs waiting for their run_at: they run now.") var scheduled = false
    @Option(parsing: .unconditional, help: "At most this many.") var limit: Int?
    @Flag(help: "Print JSON instead of lines.") var json = false

    func validate() throws {
        try filters.requireOne(unless: all)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let (filter, limit, scheduled) = (filters.filter(), self.limit ?? Int.max, self.scheduled)
        let readied = try await database.withClient { client, logger in
            let jobs = QueuedJobs(client: client, logger: logger)
            return try await inBatches(of: filter, upTo: limit, on: client, logger: logger, id: \.self) {
                try await jobs.retryNow($0, limit: $1, scheduledToo: scheduled)
            }
        }
        try report(readied, json: json, dryRun: false, each: { "job \($0) is ready" },
                   total: "made \(readied.count) job\(readied.count == 1 ? "" : "s") ready")
        if readied.count < limit {
            try requireAll(filters.ids, done: readied, "not made ready", scheduled
                ? "no such job, not delayed (ready, blocked or in flight), or being processed"
                : "no such job, not waiting for a retry, or being processed")
        }
    }
}

/// Runs `batch` (given `filter` with its cursor past the ids done, and the
/// most it may take; it answers what it took, ascending by `id`) until
/// `limit` are done or a batch comes back short: small transactions keep the
/// locks each holds brief. Only jobs enqueued before the start (or the
/// filter's `enqueuedBy`) are taken, each once (a job retried that fails
/// again meanwhile waits for the next command).
private func inBatches<Item>(
    of filter: JobFilter, upTo limit: Int, on client: PostgresClient, logger: Logger, id: KeyPath<Item, Int64>,
    _ batch: (JobFilter, Int) async throws -> [Item]
) async throws -> [Item] {
    var done: [Item] = [], cursor = filter
    if cursor.enqueuedBy == nil { cursor.enqueuedBy = try await DatabaseClock.now(client, logger: logger) }
    while done.count < limit {
        let size = min(limit - done.count, 1000)
        let taken = try await batch(cursor, size)
        done += taken
        if taken.count < size { break }
        cursor.afterID = taken.last?[keyPath: id]
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

/// The ids a command acted on, as JSON; a cancel adds the running jobs'
/// fates (`nil`s are left out).
private struct JobIDs: Encodable {
    let jobs: [Int64]
    let dryRun: Bool
    /// Running when asked, and ended before their workers stopped them.
    var finished: [Int64]? = nil
    var stillRunning: [Int64]? = nil
}
