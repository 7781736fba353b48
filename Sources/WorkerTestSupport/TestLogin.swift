import Foundation
import Logging
import PostgresNIO
import WorkerEngine

/// A login role of a test's own, member of one of the schema's roles
/// (`worker_producer`, `worker_consumer`, `worker_admin`): tests connect as it
/// to prove what that role can and cannot do.
public struct TestLogin: Sendable {
    public let user: String
    public let config: DatabaseConfig
    public let client: PostgresClient

    /// For child processes (workerd, workerctl).
    public var url: String {
        "postgres://\(user)@\(config.host):\(config.port)/\(config.database)?sslmode=disable"
    }

    /// Runs `statement` as this login and returns the SQLSTATE it failed
    /// with, or nil when it succeeded.
    public func sqlState(of statement: PostgresQuery) async -> String? {
        do {
            try await client.query(statement, logger: makeTestLogger()).drain()
            return nil
        } catch let error as PSQLError {
            return error.serverInfo?[.sqlState] ?? "client: \(String(reflecting: error))"
        } catch {
            return "not a PSQLError: \(error)"
        }
    }
}

extension TestDatabase {
    /// Runs `body` connected as a fresh login role in `role`, dropped afterwards.
    public func withLogin(in role: String, _ body: @Sendable (TestLogin) async throws -> Void) async throws {
        let user = "\(name)_\(role)"
        try await execute("CREATE ROLE \(unescaped: user) LOGIN IN ROLE \(unescaped: role)")
        var login = self.config
        login.user = user
        let config = login
        do {
            try await withPostgresClient(try config.clientConfiguration(maximumConnections: 4), logger: logger) { client in
                try await body(TestLogin(user: user, config: config, client: client))
            }
        } catch {
            try? await execute("DROP ROLE \(unescaped: user)")
            throw error
        }
        try await execute("DROP ROLE \(unescaped: user)")
    }
}
