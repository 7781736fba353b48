import Foundation
import Logging
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

/// `sslmode` from the URL against a PostgreSQL with a certificate for
/// `localhost` signed by a CA that `scripts/pg start --tls` made.
@Suite(.timeLimit(.minutes(2))) struct TLSTests {
    /// Whether the session of a client made from `url` is encrypted, or the error it failed with.
    func encrypted(_ url: String) async -> Result<Bool, any Error> {
        do {
            let config = try DatabaseConfig.parse(url: url)
            try await config.probe(logger: makeTestLogger())  // as workerd and workerctl do first
            return .success(try await withPostgresClient(try config.clientConfiguration(maximumConnections: 1), logger: makeTestLogger()) { client in
                let rows = try await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", logger: makeTestLogger())
                for try await ssl in rows.decode(Bool.self) { return ssl }
                return false
            })
        } catch {
            return .failure(error)
        }
    }

    @Test func eachSSLModeConnectsAsLibpqWouldAndVerificationFailsWhereItShould() async throws {
        try await withPrivateCluster(["--fast", "--tls"]) { cluster in
            let port = cluster.port
            let ca = cluster.certificateAuthority
            // A handshake on two cores that the whole suite keeps busy once took over the default 5 s.
            func url(_ host: String, _ query: String) -> String {
                "postgres://postgres@\(host):\(port)/postgres?connect_timeout=60&\(query)"
            }

            #expect(try await encrypted(url("127.0.0.1", "sslmode=disable")).get() == false)
            #expect(try await encrypted(url("127.0.0.1", "sslmode=prefer")).get() == true)
            #expect(try await encrypted(url("127.0.0.1", "sslmode=require")).get() == true)
            #expect(try await encrypted(url("127.0.0.1", "sslmode=verify-ca&sslrootcert=\(ca)")).get() == true)
            #expect(try await encrypted(url("localhost", "sslmode=verify-full&sslrootcert=\(ca)")).get() == true)

            // The certificate names localhost, not the address.
            switch await encrypted(url("127.0.0.1", "sslmode=verify-full&sslrootcert=\(ca)")) {
            case .success: Issue.record("verify-full accepted a certificate for another host name")
            case .failure(let error): #expect("\(error)".contains("certificate is not for this host name"), "\(error)")
            }
            // Without the CA, the system's roots do not trust a private one.
            if case .success = await encrypted(url("localhost", "sslmode=verify-full")) {
                Issue.record("verify-full accepted a certificate from an unknown CA")
            }
            // A CA file that is not there is a configuration error that names the setting.
            guard case .failure(let error) = await encrypted(url("localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")) else {
                Issue.record("a missing sslrootcert file was accepted")
                return
            }
            #expect("\(error)".contains("sslrootcert") && "\(error)".contains("/nonexistent/ca.crt"), "\(error)")

            // The commands take the same URL.
            let migrate = try await runTool("workerctl", ["migrate", "--sql-dir", repositorySQLDirectory.path],
                                            environment: ["DATABASE_URL": url("localhost", "sslmode=verify-full&sslrootcert=\(ca)")])
            #expect(migrate.status == 0, "\(migrate)")
            // And say why they cannot connect, instead of waiting.
            let untrusted = try await runTool("workerctl", ["stats"], environment: ["DATABASE_URL": url("localhost", "sslmode=verify-full")])
            #expect(untrusted.status == 1 && untrusted.stderr.contains("cannot connect to postgres://postgres@localhost")
                    && untrusted.stderr.contains("certificate verify failed")
                    && untrusted.stderr.contains("set sslrootcert"), "\(untrusted)")
        }
    }
}
