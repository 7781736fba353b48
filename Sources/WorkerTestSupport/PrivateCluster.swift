import Foundation

/// A PostgreSQL cluster of one test's own, started by `scripts/pg`, for tests
/// that restart the server or change its settings (the shared one serves
/// every other test).
public struct PrivateCluster: Sendable {
    public let directory: String
    /// `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable`
    public let url: String
    public var port: Int { URLComponents(string: url)?.port ?? 0 }
    /// The CA that signed the server's certificate, with `--tls`.
    public var certificateAuthority: String { directory + "/tls/ca.crt" }
}

/// Starts a cluster with `scripts/pg start DIR options...`, runs `body`, and
/// removes the cluster whatever happens.
public func withPrivateCluster<T: Sendable>(
    _ options: [String] = ["--fast"], _ body: (PrivateCluster) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("worker-pg-\(UUID().uuidString.prefix(8))").path
    let started = try await runScript("pg", ["start", directory] + options)
    guard started.status == 0 else {
        _ = try? await runScript("pg", ["stop", directory])
        throw DatabaseTestError(detail: "scripts/pg start failed: \(started)")
    }
    let cluster = PrivateCluster(directory: directory, url: started.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    do {
        let result = try await body(cluster)
        _ = try await runScript("pg", ["stop", directory])
        return result
    } catch {
        _ = try? await runScript("pg", ["stop", directory])
        throw error
    }
}
