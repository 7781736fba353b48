import Foundation
import PostgresNIO

/// Where one migration stands against a database: what `workerctl migrate
/// --dry-run` shows before a release is rolled out.
public struct MigrationStatus: Sendable, Equatable, Encodable {
    public enum State: String, Sendable, Encodable {
        /// Applied as the file reads now.
        case applied
        /// Not applied yet: `migrate` would apply it.
        case pending
        /// Edited after it was applied: `migrate` refuses to run.
        case changed
        /// Applied, but no file has its version: the database is ahead of these files.
        case missing
    }

    public var version: Int
    public var name: String
    public var state: State
    public var appliedAt: Date?
    /// False for a file that runs outside a transaction; nil for one missing.
    public var inTransaction: Bool?
}

extension Migrator {
    /// What `migrate(migrations)` would do, in version order, changing nothing.
    public func plan(_ migrations: [Migration]) async throws -> [MigrationStatus] {
        try await client.withConnection { connection in
            let applied = try await self.applied(on: connection)
            var plan: [MigrationStatus] = []
            for migration in migrations {
                guard let record = applied[migration.version] else {
                    plan.append(MigrationStatus(
                        version: migration.version, name: migration.name, state: .pending, inTransaction: migration.runsInTransaction))
                    continue
                }
                let same = try await self.checksum(of: migration, on: connection) == record.checksum
                plan.append(MigrationStatus(
                    version: migration.version, name: migration.name, state: same ? .applied : .changed,
                    appliedAt: record.appliedAt, inTransaction: migration.runsInTransaction))
            }
            let known = Set(migrations.map(\.version))
            for (version, record) in applied where !known.contains(version) {
                plan.append(MigrationStatus(version: version, name: record.name, state: .missing, appliedAt: record.appliedAt))
            }
            return plan.sorted { $0.version < $1.version }
        }
    }
}
