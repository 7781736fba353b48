import ArgumentParser
import Foundation
import WorkerEngine

struct SchedulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedules", abstract: "Recurring jobs: list, set, remove, pause and resume cron schedules.",
        discussion: """
            A schedule enqueues a job at every minute its cron expression names, on the clock of its time zone \
            (UTC unless set); whichever workerd looks first (each does every second) enqueues it, exactly once. \
            Runs missed while no worker ran collapse into one.
            """,
        subcommands: [
            SchedulesListCommand.self, SchedulesSetCommand.self, SchedulesRunCommand.self, SchedulesRemoveCommand.self,
            SchedulesPauseCommand.self, SchedulesResumeCommand.self,
        ])
}

struct SchedulesListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the schedules with their next run.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let schedules = try await database.withClient { client, logger in
            try await Schedules(client: client, logger: logger).list()
        }
        if json { return try JSONOutput.print(schedules) }
        let time = ISO8601DateFormatter()
        print(Table.render(
            header: ["NAME", "CRON", "TIME_ZONE", "QUEUE", "KIND", "NEXT_RUN", "LAST_RUN", "STATE"],
            rows: schedules.map {
                [$0.name, $0.cron, $0.timeZone, $0.queue, $0.kind, $0.nextRunAt.map(time.string) ?? "-",
                 $0.lastRunAt.map(time.string) ?? "-",
                 ($0.error.map { "broken: \($0)" } ?? ($0.paused ? "paused" : "active"))
                    + ($0.skipWhileWaiting ? ",skip-while-waiting" : "")]
            }))
        if schedules.isEmpty { print("(no schedules)") }
    }
}

struct SchedulesSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Create or replace a schedule; its first run is the first its cron names after now.",
        discussion: """
            CRON has five fields (minute hour day-of-month month day-of-week), e.g. '*/15 * * * *' or \
            '0 2 * * MON-FRI', or @hourly, @daily, @weekly, @monthly, @yearly, read on the clock of --time-zone. \
            Across daylight saving time, a cron whose hour field starts with * follows real time; one that names \
            its hours runs once at each time it names on the wall clock (a time the clocks skip runs as much later \
            as they jumped). Each run's job has the idempotency key schedule:NAME:<run time in UTC>. With \
            --skip-while-waiting, a run is skipped while the last run's job still waits to be claimed (its queue \
            paused or behind), so that one job waits rather than one per run. Setting a \
            schedule that exists replaces it whole: an option left out takes its default (--time-zone UTC, \
            --queue default), not the value it had.
            """)

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The schedule's name.") var name: String
    @Option(help: "When it runs: five cron fields.") var cron: String
    @Option(help: "The clock the cron is read on: an IANA time zone name such as Europe/Berlin.")
    var timeZone = "UTC"
    @OptionGroup var job: JobDefinitionOptions
    @Flag(help: "Skip a run while the last run's job still waits to be claimed.") var skipWhileWaiting = false

    func validate() throws {
        guard !name.isEmpty, name.count <= 128 else { throw ValidationError("NAME must have 1 to 128 characters") }
        do {
            _ = try Schedules.nextRun(of: cron, in: timeZone, after: Date())
        } catch {
            if case .unknownTimeZone = error { throw ValidationError("--time-zone: \(error)") }
            throw ValidationError("--cron: \(error)")
        }
    }

    func run() async throws {
        let schedule = Schedule(
            name: name, cron: cron, timeZone: timeZone, queue: job.queue, kind: job.kind, payload: job.payload, priority: job.priority,
            maxAttempts: job.maxAttempts, skipWhileWaiting: skipWhileWaiting)
        let stored = try await database.withClient { client, logger in
            try await Schedules(client: client, logger: logger).set(schedule)
        }
        let next = stored.nextRunAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-"
        print("schedule '\(stored.name)' set: \(stored.kind) on queue \(stored.queue), next run \(next)"
            + (stored.skipWhileWaiting ? ", skipped while its last job waits" : "") + (stored.paused ? " (paused)" : ""))
        if let note = unknownKindNote(stored.kind) { print(note) }
    }
}

struct SchedulesRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Enqueue a run of a schedule now, paused or not; its next run stays as it was.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The schedule's name.") var name: String

    func run() async throws {
        let name = self.name
        let job = try await onSchedule(name, database) { try await $0.runNow(name: name) }
        print("enqueued job \(job) for schedule '\(name)'")
    }
}

struct SchedulesRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Delete a schedule (the jobs it enqueued stay).")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The schedule's name.") var name: String

    func run() async throws {
        let name = self.name
        try await onSchedule(name, database) { try await $0.remove(name: name) ? () : nil }
        print("removed schedule '\(name)'")
    }
}

struct SchedulesPauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop a schedule from enqueuing until it is resumed.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The schedule's name.") var name: String

    func run() async throws {
        let name = self.name
        let changed = try await onSchedule(name, database) { try await $0.setPaused(true, name: name) }
        print(changed ? "paused schedule '\(name)'" : "schedule '\(name)' was already paused")
    }
}

struct SchedulesResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Resume a paused schedule from its next run after now (missed runs are not made up).")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The schedule's name.") var name: String

    func run() async throws {
        let name = self.name
        guard try await onSchedule(name, database, { try await $0.setPaused(false, name: name) }) else {
            throw CommandFailure("schedule '\(name)' is not paused")
        }
        print("resumed schedule '\(name)'")
    }
}

/// What `body` answers for the schedule `name`; fails when it answers `nil`
/// (there is no such schedule).
@discardableResult
private func onSchedule<T: Sendable>(
    _ name: String, _ database: DatabaseOptions, _ body: @escaping @Sendable (Schedules) async throws -> T?
) async throws -> T {
    guard let answer = try await database.withClient({ client, logger in
        try await body(Schedules(client: client, logger: logger))
    }) else { throw CommandFailure("no schedule named '\(name)'") }
    return answer
}
