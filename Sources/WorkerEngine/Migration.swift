import Foundation

/// One numbered file of `sql/`, e.g. `001_queue.sql`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// The header line that runs a file outside a transaction.
    public static let noTransactionMarker = "-- worker:no-transaction"

    /// False for a file whose leading comments include `noTransactionMarker`:
    /// its statements run one by one outside a transaction, as CREATE INDEX
    /// CONCURRENTLY must (an index built in a transaction blocks every write
    /// to its table until it is built).
    public var runsInTransaction: Bool { markerPlace != .leading }

    enum MarkerPlace { case absent, leading, misplaced }
    /// Spaces, and a byte order mark an editor put first.
    private static let blank = CharacterSet.whitespaces.union(CharacterSet(charactersIn: "\u{FEFF}"))

    /// Where the marker is. Any other line that names it (in a block
    /// comment, after a statement, with words after it, a second time) makes
    /// the file `misplaced`: `load` refuses it rather than guess.
    var markerPlace: MarkerPlace {
        var place = MarkerPlace.absent
        var leading = true
        for line in sql.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: Self.blank)
            let isMarker = trimmed.hasPrefix("--")
                && trimmed.dropFirst(2).trimmingCharacters(in: .whitespaces).lowercased() == "worker:no-transaction"
            if isMarker && leading && place == .absent {
                place = .leading
            } else if trimmed.lowercased().contains("worker:no-transaction") {
                return .misplaced
            }
            if !trimmed.isEmpty && !trimmed.hasPrefix("--") { leading = false }
        }
        return place
    }

    /// Reads every `NNN_name.sql` of `directory`, in version order. Two files
    /// with one number, or a file named otherwise, is an error rather than a
    /// silently skipped change.
    public static func load(from directory: URL) throws -> [Migration] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError.directoryUnreadable(directory.path)
        }
        var migrations: [Migration] = []
        for file in names.sorted() where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            let digits = stem.prefix(while: \.isNumber)
            guard !digits.isEmpty, let version = Int(digits), stem.dropFirst(digits.count).first == "_" else {
                throw MigrationError.badFileName(file)
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            let migration = Migration(version: version, name: String(stem), sql: sql)
            guard migration.markerPlace != .misplaced else { throw MigrationError.misplacedMarker(file) }
            migrations.append(migration)
        }
        let versions = migrations.map(\.version)
        if let duplicate = versions.first(where: { v in versions.filter { $0 == v }.count > 1 }) {
            throw MigrationError.duplicateVersion(duplicate)
        }
        guard !migrations.isEmpty else { throw MigrationError.directoryUnreadable(directory.path) }
        return migrations
    }

    /// Where the `sql/` directory is: `explicit` if given, else `WORKER_SQL_DIR`,
    /// else next to the installed binary (`../share/worker/sql`), else the
    /// source tree the binary was built from, else `./sql`.
    public static func locateDirectory(explicit: String?, environment: [String: String]) throws -> URL {
        if let path = explicit ?? environment["WORKER_SQL_DIR"] {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ConfigurationError(setting: "--sql-dir / WORKER_SQL_DIR", "'\(path)' is not a directory")
            }
            return URL(fileURLWithPath: path)
        }
        let binDirectory = runningExecutable().deletingLastPathComponent()
        let candidates = [
            binDirectory.appendingPathComponent("../share/worker/sql"),
            binDirectory.appendingPathComponent("../../sql"),          // .build/debug/workerctl
            binDirectory.appendingPathComponent("../../../sql"),       // .build/x86_64-unknown-linux-gnu/debug
            URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("sql"),
        ]
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("001_queue.sql").path) {
            return candidate.standardizedFileURL
        }
        throw MigrationError.directoryNotFound(candidates.map { $0.standardizedFileURL.path })
    }

    /// The running binary's own file. Not argv[0]: started from PATH, as an
    /// operator types `workerctl migrate`, that is the bare name, and the
    /// install's share/worker/sql was looked for beside the current directory.
    private static func runningExecutable() -> URL {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path)
        }
        return URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
    }
}

public enum MigrationError: Error, CustomStringConvertible, Equatable, Sendable {
    case directoryNotFound([String])
    case directoryUnreadable(String)
    case badFileName(String)
    case duplicateVersion(Int)
    case changedAfterApply(version: Int, name: String)
    case failed(version: Int, name: String, statement: String, error: String)
    /// In a migration outside a transaction: the statements before it stay applied.
    case failedOutsideTransaction(version: Int, name: String, statement: String, error: String, droppedIndexes: [String])
    /// A CREATE INDEX CONCURRENTLY that failed or was stopped leaves its index, invalid; IF NOT EXISTS then skips it.
    case invalidIndexes(version: Int, name: String, indexes: [String])
    case misplacedMarker(String)
    case lockNotGranted(version: Int, name: String, statement: String, lockTimeout: String, attempts: Int)

    public var description: String {
        switch self {
        case .directoryNotFound(let tried):
            "no migrations directory found (tried \(tried.joined(separator: ", "))): pass --sql-dir or set WORKER_SQL_DIR"
        case .directoryUnreadable(let path): "no migrations can be read from \(path)"
        case .badFileName(let name): "migration file '\(name)' is not named NNN_name.sql"
        case .duplicateVersion(let version): "two migration files have version \(version)"
        case .changedAfterApply(let version, let name):
            "migration \(version) (\(name)) was changed after it was applied: add a new migration instead"
        case .failed(let version, let name, let statement, let error):
            "migration \(version) (\(name)) failed and was rolled back: \(error)\nstatement: \(statement.prefix(500))"
        case .failedOutsideTransaction(let version, let name, let statement, let error, let dropped):
            "migration \(version) (\(name)) failed outside a transaction: \(error)\nThe statements before this one "
                + "stay applied\(dropped.isEmpty ? "" : "; the invalid index it left, \(dropped.joined(separator: ", ")), was dropped"). "
                + "Once the cause is fixed, migrate runs the whole file again: each of its statements must be safe "
                + "to run twice (IF NOT EXISTS).\nstatement: \(statement.prefix(500))"
        case .invalidIndexes(let version, let name, let indexes):
            "migration \(version) (\(name)) is not started while the queue's schemas have invalid indexes, "
                + "\(indexes.joined(separator: ", ")), which every write maintains and no query uses (a CREATE INDEX "
                + "CONCURRENTLY that failed or was stopped leaves one, and IF NOT EXISTS would skip it): "
                + "DROP INDEX CONCURRENTLY each, then migrate again"
        case .misplacedMarker(let file):
            "migration file '\(file)' names worker:no-transaction other than in one line '\(Migration.noTransactionMarker)' "
                + "among the -- comments before its first statement"
        case .lockNotGranted(let version, let name, let statement, let lockTimeout, let attempts):
            "migration \(version) (\(name)) waited longer than the lock timeout (\(lockTimeout)) for a lock "
                + "\(attempts == 1 ? "" : "in each of \(attempts) attempts ")and was rolled back: another session "
                + "holds a lock on what it changes (look in pg_stat_activity for a long transaction), "
                + "or raise --lock-timeout\nstatement: \(statement.prefix(500))"
        }
    }
}
