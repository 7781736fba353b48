import Foundation
import Logging
import PostgresNIO

/// The database's clock, which `created_at` and `failed_at` are written by. An
/// operator's command that works in many batches reads it once at its start
/// and acts only on rows from before it: what arrives meanwhile (a new job, a
/// job redriven and dead again) waits for the next command.
public enum DatabaseClock {
    public static func now(_ client: PostgresClient, logger: Logger) async throws -> Date {
        for try await now in try await client.query("SELECT now()", logger: logger).decode(Date.self) { return now }
        throw PostgresWorkerError.unexpected("no row for SELECT now()")
    }
}
