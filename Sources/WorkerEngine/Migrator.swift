import Foundation
import Logging
import PostgresNIO

/// Applies pending migrations, each in its own transaction, under an advisory
/// lock: any number of hosts may run `workerctl migrate` at once, one applies,
/// the others wait and then find nothing left to do.
public struct Migrator: Sendable {
    /// The schema version this build needs; `workerd` refuses to start below it.
    public static let requiredVersion = 21
    static let advisoryLockKey: Int64 = 0x776f_726b_6572  // "worker"

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Returns the migrations it applied (empty when the schema was current).
    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws -> [Migration] {
        try await client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.advisoryLockKey))", logger: logger).drain()
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
            try await connection.query("BEGIN", logger: logger)
            do {
                for statement in SQLScript.statements(in: migration.sql) {
                    do {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).drain()
                    } catch {
                        throw MigrationError.failed(
                            version: migration.version, name: migration.name, statement: statement,
                            error: String(reflecting: error))
                    }
                }
                try await connection.query(
                    """
                    INSERT INTO worker.schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(checksum))
                    """, logger: logger)
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
            logger.info("migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            applied.append(migration)
        }
        return applied
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
