import Logging
import PostgresNIO

/// The server's autovacuum settings, as far as the queue cares. Every job
/// done leaves dead entries in the claim's index until vacuum removes them,
/// and every claim walks past them: at PostgreSQL's default naptime (a
/// minute) a busy queue collects a minute of them between passes. The
/// settings are the server's, not the queue's (autovacuum_naptime is not a
/// table setting), so workerd only says what it found; see the README,
/// "Running PostgreSQL for a queue".
public struct AutovacuumCheck: Sendable, Equatable {
    /// Longer than this, and workerd warns at start-up.
    public static let longestAdvisedNaptime: Duration = .seconds(10)

    public let enabled: Bool
    public let naptime: Duration

    public init(enabled: Bool, naptime: Duration) {
        self.enabled = enabled
        self.naptime = naptime
    }

    /// What an operator should change, or nil when the settings suit a queue.
    public var warning: String? {
        if !enabled {
            return "autovacuum is off: worker.jobs keeps every dead row, and claims slow down as they pile up;"
                + " turn autovacuum on"
        }
        if naptime > Self.longestAdvisedNaptime {
            return "autovacuum_naptime is \(Int(naptime.seconds)) s: the claim's index collects that long of dead"
                + " entries between vacuums; set autovacuum_naptime = 1s for a database that holds a busy queue"
        }
        return nil
    }

    public static func read(from client: PostgresClient, logger: Logger) async throws -> AutovacuumCheck {
        let rows = try await client.query(
            """
            SELECT current_setting('autovacuum')::boolean,
                   (extract(epoch FROM current_setting('autovacuum_naptime')::interval) * 1000)::bigint
            """, logger: logger)
        for try await (enabled, naptimeMS) in rows.decode((Bool, Int64).self) {
            return AutovacuumCheck(enabled: enabled, naptime: .milliseconds(naptimeMS))
        }
        throw PostgresWorkerError.unexpected("the autovacuum settings query returned no row")
    }
}
