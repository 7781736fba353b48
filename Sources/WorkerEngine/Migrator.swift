import Foundation
import Logging
import PostgresNIO

/// Applies pending migrations, each in its own transaction, under an advisory
/// lock: any number of hosts may run `workerctl migrate` at once, one applies,
/// the others wait and then find nothing left to do. A file marked
/// `Migration.noTransactionMarker` runs statement by statement outside a
/// transaction instead (`applyOutsideTransaction`).
///
/// A migration in a transaction waits for each table lock at most
/// `lockTimeout`. A statement waiting for a lock queues every later lock
/// request on that table behind it: an `ALTER TABLE worker.jobs` stuck
/// behind one long transaction would stop every claim and every producer's
/// insert until that transaction ends. Past the timeout the migration rolls
/// back, the fleet goes on, and it is tried again after a pause,
/// `lockAttempts` times in all.
public struct Migrator: Sendable {
    /// The schema version this build needs; `workerd` refuses to start below it.
    public static let requiredVersion = 28
    static let advisoryLockKey: Int64 = 0x776f_726b_6572  // "worker"
    public static let defaultLockTimeout = Duration.seconds(5)
    public static let defaultLockAttempts = 10

    public let client: PostgresClient
    public let logger: Logger
    /// Nil waits for locks without a limit.
    public let lockTimeout: Duration?
    public let lockAttempts: Int
    /// Between attempts, for the holder to finish; jittered so that hosts
    /// retrying together do not queue together again.
    let pauseAfterLockTimeout: ClosedRange<Duration>

    public init(client: PostgresClient, logger: Logger, lockTimeout: Duration? = defaultLockTimeout,
                lockAttempts: Int = defaultLockAttempts,
                pauseAfterLockTimeout: ClosedRange<Duration> = .milliseconds(500)...(.milliseconds(1500))) {
        self.client = client
        self.logger = logger
        self.lockTimeout = lockTimeout
        self.lockAttempts = max(lockAttempts, 1)
        self.pauseAfterLockTimeout = pauseAfterLockTimeout
    }

    /// Returns the migrations it applied (empty when the schema was current).
    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws -> [Migration] {
        try await client.withConnection { connection in
            try await lock(on: connection)
            do {
                let applied = try await apply(migrations, on: connection)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger).drain()
                return applied
            } catch {
                try? await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger).drain()
                throw error
            }
        }
    }

    /// Polls for the lock rather than waiting in pg_advisory_lock: a session
    /// waiting inside a statement holds a snapshot, for which a CREATE INDEX
    /// CONCURRENTLY in the migration that holds the lock waits; each would
    /// wait for the other until the deadlock detector failed one.
    private func lock(on connection: PostgresConnection) async throws {
        var told = false
        while true {
            let rows = try await connection.query("SELECT pg_try_advisory_lock(\(Self.advisoryLockKey))", logger: logger)
            for try await locked in rows.decode(Bool.self) where locked { return }
            if !told {
                logger.warning("another migrate holds the migration lock; waiting for it to finish")
                told = true
            }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 100...300)))
        }
    }

    private func apply(_ migrations: [Migration], on connection: PostgresConnection) async throws -> [Migration] {
        try await connection.query("CREATE SCHEMA IF NOT EXISTS worker", logger: logger)
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS worker.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, logger: logger)
        let done = try await applied(on: connection)
        var applied: [Migration] = []
        for migration in migrations {
            let checksum = try await self.checksum(of: migration, on: connection)
            if let existing = done[migration.version] {
                guard existing.checksum == checksum else {
                    throw MigrationError.changedAfterApply(version: migration.version, name: migration.name)
                }
                continue
            }
            if migration.runsInTransaction {
                try await applyWithinLockTimeout(migration, checksum: checksum, on: connection)
            } else {
                try await applyOutsideTransaction(migration, checksum: checksum, on: connection)
            }
            logger.info("migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            applied.append(migration)
        }
        return applied
    }

    private func applyWithinLockTimeout(_ migration: Migration, checksum: String, on connection: PostgresConnection) async throws {
        for attempt in 1...lockAttempts {
            do {
                return try await applyOnce(migration, checksum: checksum, on: connection)
            } catch let waited as LockWaitTimedOut {
                let lockTimeout = lockTimeout ?? .zero
                guard attempt < lockAttempts else {
                    throw MigrationError.lockNotGranted(
                        version: migration.version, name: migration.name, statement: waited.statement,
                        lockTimeout: lockTimeout.settingText, attempts: attempt)
                }
                logger.warning(
                    "migration waited longer than the lock timeout for a lock; rolled back, trying again",
                    metadata: ["version": "\(migration.version)", "name": "\(migration.name)",
                               "attempt": "\(attempt)", "lock_timeout": "\(lockTimeout.settingText)",
                               "statement": "\(waited.statement.prefix(200))"])
                let pause = Duration.milliseconds(Int64.random(
                    in: pauseAfterLockTimeout.lowerBound.milliseconds...pauseAfterLockTimeout.upperBound.milliseconds))
                try await Task.sleep(for: pause)
            }
        }
    }

    private struct LockWaitTimedOut: Error { var statement: String }

    private func applyOnce(_ migration: Migration, checksum: String, on connection: PostgresConnection) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            if let lockTimeout {
                try await connection.query(
                    "SELECT set_config('lock_timeout', \(lockTimeout.milliseconds)::text, true)", logger: logger).drain()
            }
            for statement in SQLScript.statements(in: migration.sql) {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).drain()
                } catch let error as PSQLError where lockTimeout != nil && error.serverInfo?[.sqlState] == "55P03" {  // lock_not_available
                    throw LockWaitTimedOut(statement: statement)
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "25001" {  // active_sql_transaction
                    throw MigrationError.failed(
                        version: migration.version, name: migration.name, statement: statement,
                        error: String(reflecting: error) + " (a statement that cannot run in a transaction: put the line "
                            + "'\(Migration.noTransactionMarker)' at the top of the file)")
                } catch {
                    throw MigrationError.failed(
                        version: migration.version, name: migration.name, statement: statement,
                        error: String(reflecting: error))
                }
            }
            try await record(migration, checksum: checksum, on: connection)
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    /// Each statement in its own implicit transaction, without the lock
    /// timeout: a concurrent index build waits for every older transaction,
    /// of any table, but holds back no claim or insert while it waits.
    private func applyOutsideTransaction(_ migration: Migration, checksum: String, on connection: PostgresConnection) async throws {
        let invalid = try await invalidIndexes(on: connection)
        guard invalid.isEmpty else {
            throw MigrationError.invalidIndexes(version: migration.version, name: migration.name, indexes: invalid)
        }
        for statement in SQLScript.statements(in: migration.sql) {
            let before = try await invalidIndexes(on: connection)
            do {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).drain()
            } catch {
                // A concurrent build that failed leaves its index, invalid, for every write to maintain.
                var dropped: [String] = []
                for index in (try? await invalidIndexes(on: connection))?.filter({ !before.contains($0) }) ?? [] {
                    if (try? await connection.query("DROP INDEX CONCURRENTLY IF EXISTS \(unescaped: index)", logger: logger).drain()) != nil {
                        dropped.append(index)
                    }
                }
                throw MigrationError.failedOutsideTransaction(
                    version: migration.version, name: migration.name, statement: statement,
                    error: String(reflecting: error), droppedIndexes: dropped)
            }
        }
        try await record(migration, checksum: checksum, on: connection)
    }

    /// The invalid indexes of the queue's schemas that no build is running
    /// for: what a concurrent build that failed or was stopped left behind.
    /// Partitioned indexes are invalid until each partition has its own.
    /// pg_stat_progress_create_index shows another role's build in this
    /// database without its index: while one runs, no index is named.
    public func invalidIndexes() async throws -> [String] {
        try await client.withConnection { try await invalidIndexes(on: $0) }
    }

    private func invalidIndexes(on connection: PostgresConnection) async throws -> [String] {
        let rows = try await connection.query(
            """
            SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index AS i
            JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE NOT i.indisvalid AND c.relkind = 'i' AND n.nspname IN ('worker', 'app')
              AND NOT EXISTS (
                  SELECT FROM pg_stat_progress_create_index AS p
                  WHERE p.pid <> pg_backend_pid() AND (p.datid IS NULL OR p.datname = current_database())
                    AND (p.index_relid IS NULL OR p.index_relid IN (0, i.indexrelid)))
            ORDER BY 1
            """, logger: logger)
        var names: [String] = []
        for try await name in rows.decode(String.self) { names.append(name) }
        return names
    }

    private func record(_ migration: Migration, checksum: String, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO worker.schema_migrations (version, name, checksum)
            VALUES (\(migration.version), \(migration.name), \(checksum))
            """, logger: logger)
    }

    struct AppliedMigration {
        var name: String
        var checksum: String
        var appliedAt: Date
    }

    /// The migrations recorded in the database by version; none before the first `migrate`.
    func applied(on connection: PostgresConnection) async throws -> [Int: AppliedMigration] {
        var done: [Int: AppliedMigration] = [:]
        let exists = try await connection.query(
            "SELECT to_regclass('worker.schema_migrations') IS NOT NULL", logger: logger)
        for try await found in exists.decode(Bool.self) where !found { return done }
        let rows = try await connection.query(
            "SELECT version, name, checksum, applied_at FROM worker.schema_migrations", logger: logger)
        for try await (version, name, checksum, appliedAt) in rows.decode((Int, String, String, Date).self) {
            done[version] = AppliedMigration(name: name, checksum: checksum, appliedAt: appliedAt)
        }
        return done
    }

    func checksum(of migration: Migration, on connection: PostgresConnection) async throws -> String {
        let rows = try await connection.query("SELECT md5(\(migration.sql))", logger: logger)
        for try await sum in rows.decode(String.self) { return sum }
        throw PostgresWorkerError.unexpected("md5() returned nothing")
    }

    /// The highest applied version, 0 for an empty database.
    public func currentVersion() async throws -> Int {
        try await client.withConnection { try await applied(on: $0).keys.max() ?? 0 }
    }

    /// Throws unless the database is migrated far enough for this build;
    /// returns the schema's version.
    @discardableResult
    public func checkSchema() async throws -> Int {
        let version = try await currentVersion()
        guard version >= Self.requiredVersion else {
            throw PostgresWorkerError.schemaOutdated(found: version, required: Self.requiredVersion)
        }
        return version
    }
}
