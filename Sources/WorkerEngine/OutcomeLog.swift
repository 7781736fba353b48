import Logging
import PostgresNIO
import Synchronization

/// The lines a batch's transaction logs about its jobs' outcomes (dead
/// lettered, retried, duplicate, rejected, lease lost), written once the
/// transaction has committed. A transaction rolled back did none of what they
/// say: the fast path a later handler abandons runs again guarded and would
/// have logged each of its dead letters twice.
final class OutcomeLog: Sendable {
    private struct Line: Sendable {
        var level: Logger.Level
        var message: Logger.Message
        var metadata: Logger.Metadata
    }

    private let lines = Mutex<[Line]>([])

    @TaskLocal static var current: OutcomeLog?

    /// Held for the transaction's commit when one collects them, else written now.
    static func write(_ logger: Logger, _ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata = [:]) {
        guard let current else { return logger.log(level: level, message, metadata: metadata) }
        // The job's own metadata is a task local's: taken now, while it is set.
        let line = Line(level: level, message: message, metadata: (JobLogMetadata.current?.metadata ?? [:]).merging(metadata) { $1 })
        current.lines.withLock { $0.append(line) }
    }

    /// Runs `body` in a transaction on `connection`; its outcome lines are
    /// written after the commit, and dropped with a rollback.
    static func committing<T: Sendable>(
        on connection: PostgresConnection, logger: Logger, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let log = OutcomeLog()
        let result = try await $current.withValue(log) {
            try await connection.withTransaction(logger: logger) { try await body($0) }
        }
        for line in log.lines.withLock({ $0 }) { logger.log(level: line.level, line.message, metadata: line.metadata) }
        return result
    }
}
