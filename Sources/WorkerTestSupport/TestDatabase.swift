import Foundation
import Logging
import PostgresNIO
import WorkerEngine

/// A migrated database of its own for one test, on the server named by
/// `DATABASE_URL` (which `scripts/test` starts). Databases are copied from a
/// template migrated once per test process, so a test starts in milliseconds
/// and tests run in parallel without seeing each other's jobs.
public struct TestDatabase: Sendable {
    public let name: String
    public let config: DatabaseConfig
    public let client: PostgresClient
    public let logger: Logger

    /// The URL of this test's database, for child processes.
    public var url: String {
        "postgres://\(config.user)@\(config.host):\(config.port)/\(name)?sslmode=disable"
    }

    public var queue: JobQueue { JobQueue(client: client, logger: logger) }
    public var deadLetters: DeadLetterQueue { DeadLetterQueue(client: client, logger: logger) }

    /// The first column of the first row of `query` as an integer.
    public func int(_ query: PostgresQuery) async throws -> Int {
        for try await value in try await client.query(query, logger: logger).decode(Int.self) { return value }
        throw PostgresWorkerError.unexpected("no row for \(query.sql)")
    }

    /// The first column of the first row of `query` as text.
    public func string(_ query: PostgresQuery) async throws -> String {
        for try await value in try await client.query(query, logger: logger).decode(String.self) { return value }
        throw PostgresWorkerError.unexpected("no row for \(query.sql)")
    }

    public func execute(_ query: PostgresQuery) async throws {
        try await client.query(query, logger: logger).drain()
    }

    /// Makes every job claimable now, as if its lease or retry delay had passed.
    public func makeAllDue() async throws {
        try await execute("UPDATE worker.jobs SET visible_at = now() - interval '1 millisecond'")
    }

    public func jobCount() async throws -> Int { try await int("SELECT count(*)::int FROM worker.jobs") }

    /// Sessions of this database whose statement waits for a lock (a row, a transaction).
    public func sessionsWaitingForALock() async throws -> Int {
        try await int("SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    }

    /// Whether a worker's listener has both its LISTENs in this database:
    /// `worker_cancel`, its session's last statement, comes after `worker_jobs`.
    public func listenerConnected() async throws -> Bool {
        try await int("""
            SELECT count(*)::int FROM pg_stat_activity
            WHERE datname = current_database() AND query LIKE 'LISTEN%worker\\_cancel%'
            """) > 0
    }
    public func deadCount() async throws -> Int { try await int("SELECT count(*)::int FROM worker.dead_letters") }
}

/// The repository's `sql/`, for tests that run `workerctl migrate`.
public var repositorySQLDirectory: URL { TestServer.sqlDirectory }

/// Quiet unless `WORKER_TEST_LOG` names a level: failing jobs are what many tests are about.
public func makeTestLogger(_ label: String = "test") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["WORKER_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}

/// Runs `body` with a fresh migrated database, dropped afterwards.
public func withTestDatabase(
    connections: Int = 20, _ body: @Sendable (TestDatabase) async throws -> Void
) async throws {
    try await withFreshDatabase(migrated: true, connections: connections, body)
}

/// Runs `body` with a database that has no schema at all.
public func withEmptyTestDatabase(_ body: @Sendable (TestDatabase) async throws -> Void) async throws {
    try await withFreshDatabase(migrated: false, connections: 20, body)
}

private func withFreshDatabase(
    migrated: Bool, connections: Int, _ body: @Sendable (TestDatabase) async throws -> Void
) async throws {
    let server = try TestServer.shared()
    let name = "worker_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    let template = migrated ? try await server.template() : "template0"
    try await server.admin("CREATE DATABASE \(unescaped: name) TEMPLATE \(unescaped: template)\(unescaped: try await server.copyStrategy())")
    let logger = makeTestLogger()
    let config = server.config.with(database: name)
    do {
        try await withPostgresClient(try config.clientConfiguration(maximumConnections: connections), logger: logger) { client in
            try await body(TestDatabase(name: name, config: config, client: client, logger: logger))
        }
        try await server.admin("DROP DATABASE \(unescaped: name) WITH (FORCE)")
    } catch {
        try? await server.admin("DROP DATABASE \(unescaped: name) WITH (FORCE)")
        // PSQLError hides the server's message from `description`; a failing test needs it.
        throw error is PSQLError ? DatabaseTestError(detail: String(reflecting: error)) : error
    }
}

/// The server of `DATABASE_URL`, with the template database of this process.
final class TestServer: Sendable {
    let config: DatabaseConfig
    private let client: PostgresClient
    private let templateTask: Task<String, any Error>
    private let strategyTask: Task<String, any Error>
    nonisolated(unsafe) private static var instance: TestServer?
    private static let lock = NSLock()

    static func shared() throws -> TestServer {
        try lock.withLock {
            if let instance { return instance }
            let server = try TestServer()
            instance = server
            return server
        }
    }

    private init() throws {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"] else {
            throw ConfigurationError(
                setting: "DATABASE_URL", "not set: run the tests with scripts/test, which starts a PostgreSQL")
        }
        let config = try DatabaseConfig.parse(url: url)
        let client = PostgresClient(configuration: try config.clientConfiguration(maximumConnections: 8), backgroundLogger: makeTestLogger())
        Task { await client.run() }  // lives as long as the test process
        self.config = config
        self.client = client
        // CREATE DATABASE runs one at a time; from PostgreSQL 15, FILE_COPY copies
        // the template's files (a checkpoint, cheap without fsync) where the
        // default writes every block to the WAL: 44 ms a database instead of
        // 101, which two hundred tests starting together wait for in turn.
        self.strategyTask = Task {
            for try await version in try await client.query("SHOW server_version_num", logger: makeTestLogger()).decode(String.self)
            where (Int(version) ?? 0) >= 150_000 { return " STRATEGY FILE_COPY" }
            return ""
        }
        let name = "worker_template_\(ProcessInfo.processInfo.processIdentifier)"
        self.templateTask = Task {
            let logger = makeTestLogger()
            try await client.query("DROP DATABASE IF EXISTS \(unescaped: name) WITH (FORCE)", logger: logger)
            try await client.query("CREATE DATABASE \(unescaped: name) TEMPLATE template0", logger: logger)
            let migrations = try Migration.load(from: TestServer.sqlDirectory)
            try await withPostgresClient(try config.with(database: name).clientConfiguration(maximumConnections: 1), logger: logger) {
                try await Migrator(client: $0, logger: logger).migrate(migrations)
            }
            return name
        }
    }

    /// The repository's `sql/`, found from this file's place in the tree.
    static var sqlDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../sql").standardizedFileURL
    }

    func template() async throws -> String { try await templateTask.value }

    func copyStrategy() async throws -> String { try await strategyTask.value }

    func admin(_ query: PostgresQuery) async throws {
        try await client.query(query, logger: makeTestLogger()).drain()
    }
}

public struct DatabaseTestError: Error, CustomStringConvertible {
    public var detail: String
    public init(detail: String) { self.detail = detail }
    public var description: String { detail }
}
