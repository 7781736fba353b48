import Logging
import PostgresNIO

/// Runs a connection pool for the duration of `body`: for commands and tests
/// that are not a long-running `ServiceGroup`.
@discardableResult
public func withPostgresClient<T: Sendable>(
    _ configuration: PostgresClient.Configuration,
    logger: Logger,
    _ body: @Sendable (PostgresClient) async throws -> T
) async throws -> T {
    let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}
