import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import WorkerEngine

/// `workerctl`: the operator's command.
public struct WorkerctlCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "workerctl",
        abstract: "Administer the PostgreSQL job queue: schema, stats, jobs, dead letters.",
        discussion: """
            The database comes from --database-url, else DATABASE_URL, else the file named by DATABASE_URL_FILE, \
            else the systemd credential database-url, else the PG* variables, as with psql.
            """,
        version: ProductVersion.description,
        subcommands: [
            MigrateCommand.self, StatsCommand.self, EnqueueCommand.self, JobsCommand.self, DLQCommand.self,
            RedriveCommand.self, PauseCommand.self, ResumeCommand.self, PausesCommand.self, LimitsCommand.self, SweepCommand.self, KeysCommand.self,
            SchedulesCommand.self, WorkersCommand.self,
        ])

    public init() {}
}

/// The database options every subcommand shares.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "postgres://user:password@host:port/database?sslmode=... (default: DATABASE_URL, then PG* variables).")
    var databaseURL: String?

    /// A URL that cannot be read is a bad argument (exit 64), found before
    /// anything runs.
    func validate() throws {
        _ = try asBadArgument { try DatabaseConfig.resolve(url: databaseURL, environment: ProcessInfo.processInfo.environment) }
    }

    /// Runs `body` with a connected pool; statement errors exit with the
    /// server's message.
    func withClient<T: Sendable>(_ body: @Sendable (PostgresClient, Logger) async throws -> T) async throws -> T {
        let logger = {
            var logger = Logger(label: "workerctl")
            logger.logLevel = .warning  // a command prints what it did; the library's info lines would repeat it
            return logger
        }()
        let config = try DatabaseConfig.resolve(url: databaseURL, environment: ProcessInfo.processInfo.environment)
        var poolLogger = logger
        poolLogger.logLevel = .error  // the pool's start-up chatter is not the operator's business
        try await config.probe(logger: poolLogger)
        do {
            return try await withPostgresClient(try config.clientConfiguration(maximumConnections: 4), logger: poolLogger) {
                try await body($0, logger)
            }
        } catch let error as PSQLError {
            throw CommandFailure(error)
        } catch let error as PostgresTransactionError {
            // What failed inside a transaction, not the wrapper's dump of it.
            guard let failed = (error.beginError ?? error.closureError ?? error.commitError) as? PSQLError else { throw error }
            throw CommandFailure(failed)
        }
    }
}

/// `body`'s value; a setting it finds invalid is a bad argument (exit 64, with
/// the usage), not a command that failed.
func asBadArgument<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ConfigurationError {
        throw ValidationError(error.description)
    }
}

/// A command that ran and could not do what was asked (nothing to show, a
/// queue not paused, a statement the database refused): its reason and exit
/// status 1, without the usage text that bad arguments get.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    /// The server's message, and what to do when the schema is missing.
    init(_ error: PSQLError) {
        let state = error.serverInfo?[.sqlState]
        var text = errorText(error)
        if state == "42P01" || state == "3F000" {  // undefined table / schema
            text += "; the worker schema is missing or outdated: run `workerctl migrate`"
        }
        self.init(text)
    }
}

/// Writes values as JSON on stdout, for scripts: pretty, or one line per
/// value for streams (`stats --watch --json`).
enum JSONOutput {
    static func print<T: Encodable>(_ value: T) throws {
        Swift.print(try encode(value, compact: false))
    }

    static func encode<T: Encodable>(_ value: T, compact: Bool) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = compact ? [.sortedKeys] : [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let columns = RawJSONColumns()
        encoder.userInfo[RawJSONColumns.key] = columns
        return columns.substitute(in: String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

/// Parses times given to filters: ISO 8601 (`2026-11-23T10:00:00Z`) or an age
/// (`90m`, `2d`) meaning that long ago.
enum TimeArgument {
    static func parse(_ text: String, option: String) throws -> Date {
        let iso = ISO8601DateFormatter()
        if let date = iso.date(from: text) { return date }
        iso.formatOptions = [.withFullDate]
        if let date = iso.date(from: text) { return date }
        do {
            return Date().addingTimeInterval(-(try DurationParser.parse(text, setting: option).seconds))
        } catch {
            throw ValidationError("\(option): '\(text)' is neither an ISO 8601 time nor an age like 90m or 2d")
        }
    }
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending migrations from sql/ (safe to run from many hosts at once).",
        discussion: """
            With --dry-run it changes nothing and shows each migration as applied, pending (migrate would apply it), \
            changed (edited after it was applied: migrate would refuse, and so this exits 1) or missing (applied, \
            but not in the directory: the database is ahead of these files).

            A migration waits for a table lock at most --lock-timeout, since while it waits the fleet's statements \
            on that table queue behind it. Past that it rolls back and is tried again 0.5-1.5 s later, \
            \(Migrator.defaultLockAttempts) times in all; then migrate exits 1 and nothing of that migration is applied.

            A file whose leading comments include the line '\(Migration.noTransactionMarker)' runs a statement at a \
            time outside a transaction, without the lock timeout (CREATE INDEX CONCURRENTLY); a statement of it \
            that fails leaves those before it applied, and the invalid index it left is dropped.
            """)

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Directory of the numbered migrations (default: WORKER_SQL_DIR, the install's share/worker/sql, or ./sql).")
    var sqlDir: String?
    @Flag(help: "Show what would be applied, and change nothing.") var dryRun = false
    @Flag(help: "With --dry-run: print JSON instead of a table.") var json = false
    @Option(help: "Longest wait for a table lock per attempt, e.g. 5s; 0 waits without a limit.")
    var lockTimeout = Migrator.defaultLockTimeout.settingText

    func validate() throws {
        if json && !dryRun { throw ValidationError("--json goes with --dry-run") }
        _ = try parsedLockTimeout()
    }

    private func parsedLockTimeout() throws -> Duration? {
        let timeout = try asBadArgument { try DurationParser.parse(lockTimeout, setting: "--lock-timeout") }
        guard timeout == .zero || (Duration.milliseconds(1)...Duration.milliseconds(Int64(Int32.max))).contains(timeout) else {
            throw ValidationError("--lock-timeout must be 0 (no limit) or 1ms to 24d, PostgreSQL's lock_timeout range")
        }
        return timeout == .zero ? nil : timeout
    }

    func run() async throws {
        let directory = try asBadArgument {
            try Migration.locateDirectory(explicit: sqlDir, environment: ProcessInfo.processInfo.environment)
        }
        let migrations = try Migration.load(from: directory)
        if dryRun { return try await showPlan(migrations, from: directory) }
        let (applied, version) = try await database.withClient { client, logger in
            let migrator = Migrator(client: client, logger: logger, lockTimeout: try parsedLockTimeout())
            return (try await migrator.migrate(migrations), try await migrator.currentVersion())
        }
        for migration in applied { print("applied \(migration.name)") }
        print(applied.isEmpty ? "schema is up to date at version \(version)" : "schema is now at version \(version)")
    }

    private func showPlan(_ migrations: [Migration], from directory: URL) async throws {
        let (plan, invalid) = try await database.withClient { client, logger in
            let migrator = Migrator(client: client, logger: logger)
            return (try await migrator.plan(migrations), try await migrator.invalidIndexes())
        }
        let pending = plan.filter { $0.state == .pending }
        let pendingOutside = pending.filter { $0.inTransaction == false }
        if json {
            try JSONOutput.print(plan)
        } else {
            let time = ISO8601DateFormatter()
            print(Table.render(
                header: ["VERSION", "NAME", "STATE", "APPLIED_AT"],
                rows: plan.map { ["\($0.version)", $0.name, $0.state.rawValue, $0.appliedAt.map(time.string(from:)) ?? "-"] }))
            for missing in plan where missing.state == .missing {
                print("\(missing.name) is applied but not in \(directory.path): the database is ahead of these files")
            }
            for file in pendingOutside { print("\(file.name) runs outside a transaction (\(Migration.noTransactionMarker))") }
        }
        if let changed = plan.first(where: { $0.state == .changed }) {
            throw CommandFailure(MigrationError.changedAfterApply(version: changed.version, name: changed.name).description
                + "; `workerctl migrate` would refuse to run")
        }
        if let first = pendingOutside.first, !invalid.isEmpty {
            throw CommandFailure(MigrationError.invalidIndexes(version: first.version, name: first.name, indexes: invalid).description
                + "; `workerctl migrate` would stop there")
        }
        guard !json else { return }
        print(pending.isEmpty
            ? "schema is up to date at version \(plan.map(\.version).max() ?? 0); nothing to apply"
            : "\(pending.count) pending: `workerctl migrate` would apply \(pending.count == 1 ? "it" : "them")")
    }
}

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue", abstract: "Insert jobs, as a producer would (for operators and demos).")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var job: JobDefinitionOptions
    @Option(help: "Idempotency key.") var idempotencyKey: String?
    @Option(help: "Ordering key: jobs of the queue with this key run one at a time, in order.") var orderingKey: String?
    @Option(help: "Job key: at most one job of the queue and kind waits under it; sending it again changes that job.")
    var jobKey: String?
    @Option(help: ArgumentHelp(
        "What a job key's waiting job takes from this call: replace (payload and run time), preserve_run_at (payload), keep (nothing).",
        valueName: "mode"))
    var jobKeyMode: String?
    @Option(parsing: .unconditional, help: "Run no earlier than this from now, e.g. 30s.") var delay = "0s"
    @Option(parsing: .unconditional, help: "How many copies to insert.") var count = 1

    func validate() throws {
        guard (1...1_000_000).contains(count) else { throw ValidationError("--count must be in 1...1000000") }
        // An empty key is most often an unset shell variable: every such job would share it.
        if idempotencyKey?.isEmpty == true { throw ValidationError("--idempotency-key is empty; leave it out for no key") }
        if orderingKey?.isEmpty == true { throw ValidationError("--ordering-key is empty; leave it out for no key") }
        if let jobKey {
            if orderingKey != nil { throw ValidationError("--job-key and --ordering-key do not go together") }
            if jobKey.isEmpty { throw ValidationError("--job-key is empty; leave it out for no key") }
            if jobKey.utf8.count > 1024 { throw ValidationError("--job-key is longer than 1024 bytes") }
            if count != 1 { throw ValidationError("--job-key names one waiting job: --count must be 1") }
        }
        if jobKey == nil && jobKeyMode != nil { throw ValidationError("--job-key-mode needs --job-key") }
        _ = try mode()
        _ = try asBadArgument { try DurationParser.parse(delay, setting: "--delay") }
    }

    private func mode() throws -> JobKeyMode {
        guard let jobKeyMode else { return .replace }
        guard let mode = JobKeyMode(rawValue: jobKeyMode) else {
            throw ValidationError("--job-key-mode must be replace, preserve_run_at or keep, not '\(jobKeyMode)'")
        }
        return mode
    }

    func run() async throws {
        let job = NewJob(
            queue: self.job.queue, kind: self.job.kind, payload: self.job.payload, idempotencyKey: idempotencyKey,
            priority: self.job.priority, maxAttempts: self.job.maxAttempts,
            delay: try DurationParser.parse(delay, setting: "--delay"), orderingKey: orderingKey, jobKey: jobKey,
            jobKeyMode: try mode())
        let count = self.count
        let outcome = try await database.withClient { client, logger in
            let queue = JobQueue(client: client, logger: logger)
            guard let jobKey = job.jobKey else {
                let ids = try await queue.enqueue(job, count: count)
                return count == 1 ? "enqueued job \(ids.lowerBound)" : "enqueued \(count) jobs, ids \(ids.lowerBound) to \(ids.upperBound)"
            }
            let enqueued = try await queue.submit(job)
            guard enqueued.wasWaiting else { return "enqueued job \(enqueued.id)" }
            let change = switch job.jobKeyMode {
            case .replace: "took this payload and run time"
            case .preserveRunAt: "took this payload; its run time stays"
            case .keep: "stays as it was"
            }
            return "job \(enqueued.id) waits under job key '\(jobKey)': it \(change)"
        }
        print(outcome)
        if let note = unknownKindNote(job.kind) { print(note) }
    }
}

struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Delete expired idempotency keys now, in small batches (workerd also does this every --sweep-interval).")

    @OptionGroup var database: DatabaseOptions
    @Option(parsing: .unconditional, help: "Keys deleted per transaction.") var batchSize = 1000
    @Option(parsing: .unconditional, help: "Stop after this many batches.") var maxBatches: Int?

    func validate() throws {
        guard (1...100_000).contains(batchSize) else { throw ValidationError("--batch-size must be in 1...100000") }
        if let maxBatches, maxBatches < 1 { throw ValidationError("--max-batches must be at least 1") }
    }

    func run() async throws {
        let (batchSize, maxBatches) = (self.batchSize, self.maxBatches ?? .max)
        let report = try await database.withClient { client, logger in
            try await IdempotencySweeper(client: client, logger: logger, batchSize: batchSize).sweep(maxBatches: maxBatches)
        }
        if report.skipped && report.deleted == 0 {
            print("another sweep is running; nothing deleted")
        } else {
            print("deleted \(report.deleted) expired idempotency key\(report.deleted == 1 ? "" : "s")")
        }
    }
}
