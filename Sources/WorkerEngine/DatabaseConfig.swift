import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Where the database is, read from `DATABASE_URL` or the libpq `PG*` variables,
/// so that workerd, workerctl and psql agree on the same environment.
public struct DatabaseConfig: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require, verifyCA = "verify-ca", verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCert: String?
    /// Shown in `pg_stat_activity`, so an operator can tell which worker holds a session.
    public var applicationName: String?
    /// How long a connection attempt may take: `connect_timeout` (seconds)
    /// or, without a URL, `PGCONNECT_TIMEOUT`, whose value is read as libpq
    /// reads it (0 waits a day, 1 is 2); 5 s without either, as a worker
    /// retries rather than hangs.
    public var connectTimeout: Duration = .seconds(5)

    public init(
        host: String = "localhost", port: Int = 5432, user: String = "postgres", password: String? = nil,
        database: String = "postgres", sslMode: SSLMode = .prefer, sslRootCert: String? = nil
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
    }

    /// The first of: `url` (a flag), `DATABASE_URL`, the file named by
    /// `DATABASE_URL_FILE`, the systemd credential `database-url`
    /// (`LoadCredential=database-url:/etc/worker/database-url`), the `PG*`
    /// variables. The files keep the password out of the environment and the unit.
    public static func resolve(url: String?, environment: [String: String]) throws -> DatabaseConfig {
        if let url = url ?? environment["DATABASE_URL"], !url.isEmpty {
            return try parse(url: url, setting: "--database-url / DATABASE_URL")
        }
        if let file = environment["DATABASE_URL_FILE"], !file.isEmpty {
            return try parse(url: try readSecret(file, setting: "DATABASE_URL_FILE"), setting: "DATABASE_URL_FILE (\(file))")
        }
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            let file = directory + "/database-url"
            if FileManager.default.fileExists(atPath: file) {
                return try parse(url: try readSecret(file, setting: "credential database-url"), setting: "credential database-url")
            }
        }
        let env = environment
        let user = env["PGUSER"] ?? env["USER"] ?? "postgres"
        var config = DatabaseConfig(
            host: env["PGHOST"] ?? "localhost",
            user: user,
            password: env["PGPASSWORD"],
            database: env["PGDATABASE"] ?? user
        )
        if let port = env["PGPORT"] {
            guard let value = Int(port), (1...65535).contains(value) else {
                throw ConfigurationError(setting: "PGPORT", "'\(port)' is not a port number")
            }
            config.port = value
        }
        if let mode = env["PGSSLMODE"] {
            config.sslMode = try sslMode(mode, setting: "PGSSLMODE")
        }
        config.sslRootCert = env["PGSSLROOTCERT"]
        config.applicationName = env["PGAPPNAME"]
        if let timeout = env["PGCONNECT_TIMEOUT"] {
            config.connectTimeout = try connectTimeout(timeout, setting: "PGCONNECT_TIMEOUT")
        }
        return config
    }

    private static func readSecret(_ path: String, setting: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(setting: setting, "cannot read '\(path)'")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw ConfigurationError(setting: setting, "'\(path)' is empty") }
        return text
    }

    /// Parses `postgres://user:password@host:port/database?sslmode=...&sslrootcert=...`.
    public static func parse(url: String, setting: String = "DATABASE_URL") throws -> DatabaseConfig {
        guard let components = URLComponents(string: url),
              let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme)
        else {
            throw ConfigurationError(setting: setting, "expected postgres://user:password@host:port/database")
        }
        var config = DatabaseConfig()
        if let host = components.host, !host.isEmpty { config.host = host }
        if let port = components.port {
            guard (1...65535).contains(port) else { throw ConfigurationError(setting: setting, "port \(port) is out of range") }
            config.port = port
        }
        if let user = components.user, !user.isEmpty { config.user = user.removingPercentEncoding ?? user }
        config.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.drop(while: { $0 == "/" })
        config.database = path.isEmpty ? config.user : String(path).removingPercentEncoding ?? String(path)
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode": config.sslMode = try sslMode(item.value ?? "", setting: "\(setting) sslmode")
            case "sslrootcert": config.sslRootCert = item.value
            case "host": if let host = item.value, !host.isEmpty { config.host = host }
            case "application_name": config.applicationName = item.value
            case "connect_timeout": config.connectTimeout = try connectTimeout(item.value ?? "", setting: "\(setting) connect_timeout")
            default: throw ConfigurationError(setting: setting, "unsupported parameter '\(item.name)'")
            }
        }
        return config
    }

    /// libpq's reading: whole seconds that fit an int; zero or less waits
    /// without a limit (a day here), and 1 means 2, libpq's shortest.
    private static func connectTimeout(_ value: String, setting: String) throws -> Duration {
        guard let seconds = Int32(value.trimmingCharacters(in: .whitespaces)) else {
            throw ConfigurationError(setting: setting, "'\(value)' is not a whole number of seconds up to \(Int32.max)")
        }
        return seconds <= 0 ? .seconds(86_400) : .seconds(max(Int(seconds), 2))
    }

    private static func sslMode(_ value: String, setting: String) throws -> SSLMode {
        guard let mode = SSLMode(rawValue: value) else {
            let allowed = SSLMode.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(setting: setting, "'\(value)' is not one of \(allowed)")
        }
        return mode
    }

    /// The same database under another name: tests and scripts create siblings.
    public func with(database: String) -> DatabaseConfig {
        var copy = self
        copy.database = database
        return copy
    }

    /// A connection-pool configuration for postgres-nio.
    public func clientConfiguration(maximumConnections: Int = 20) throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if host.hasPrefix("/") {
            configuration = .init(
                unixSocketPath: "\(host)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            let tls: PostgresClient.Configuration.TLS = switch try tlsSettings() {
            case .disable: .disable
            case .prefer(let settings): .prefer(settings)
            case .require(let settings): .require(settings)
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.maximumConnections = maximumConnections
        configuration.options.minimumConnections = 0
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout / .milliseconds(1)))
        configuration.options.additionalStartupParameters = Self.deadPeerDetection
            + (applicationName.map { [("application_name", $0)] } ?? [])
        return configuration
    }

    /// The pool of a worker, whose connections are in use all the time:
    /// without the pool's keep-alive pings. Their timer is armed each time a
    /// connection comes back to the pool (three tasks and a dispatch timer
    /// each); when that was twice per batch (before lanes kept their
    /// connection for a run of batches), workerd's CPU for 200,000 no-op jobs
    /// was 3.55-3.82 s with it, 2.66-3.71 s without (four interleaved pairs on
    /// a noisy machine). A dead connection is found by the statement that uses it:
    /// its deadline, or the heartbeat's look for the batch's session, closes
    /// it. (The idle timeout's timer stays: keeping connections open with
    /// `minimumConnections` crashed postgres-nio 1.33's pool once the server
    /// came back from a restart; `RestartTests` shows it.)
    public func workerClientConfiguration(connections: Int) throws -> PostgresClient.Configuration {
        var configuration = try clientConfiguration(maximumConnections: connections)
        configuration.options.keepAliveBehavior = nil
        return configuration
    }

    /// Asks the server to probe a silent client after 10 s and drop it after
    /// 25 s. A worker host that vanishes without closing its connections (power
    /// loss, a cut link) otherwise keeps its sessions for the kernel's ~2 hours,
    /// and with them the row locks of the batch it was in: SKIP LOCKED then hides
    /// those jobs from every other worker long after their lease expired, and
    /// other workers' updates of the same payment or flight wait. Found and
    /// proven by `scripts/chaos --only netns`. Ignored on Unix sockets.
    static let deadPeerDetection: [(String, String)] = [
        ("tcp_keepalives_idle", "10"), ("tcp_keepalives_interval", "5"), ("tcp_keepalives_count", "3"),
        // Also bounds how long the server waits for unacknowledged data it sent.
        ("tcp_user_timeout", "25000"),
        // A backend busy on a statement (waiting for a lock, say) does not read
        // its socket; this makes it look every 5 s whether the client is gone.
        ("client_connection_check_interval", "5000"),
    ]

    /// Opens one connection and closes it, and throws what stopped it: the pool
    /// retries failed connections quietly and forever, so a wrong password or an
    /// untrusted certificate would look like a hang without this.
    public func probe(logger: Logger) async throws {
        var configuration: PostgresConnection.Configuration
        if host.hasPrefix("/") {
            configuration = .init(
                unixSocketPath: "\(host)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            let tls: PostgresConnection.Configuration.TLS = switch try tlsSettings() {
            case .disable: .disable
            case .prefer(let settings): .prefer(try NIOSSLContext(configuration: settings))
            case .require(let settings): .require(try NIOSSLContext(configuration: settings))
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout / .milliseconds(1)))
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            try await connection.close()
        } catch {
            throw DatabaseUnreachable(url: redactedURL, error: error)
        }
    }

    private enum TLSSettings {
        case disable, prefer(TLSConfiguration), require(TLSConfiguration)
    }

    /// libpq's sslmode semantics: prefer/require encrypt without checking the
    /// server (require checks the CA when sslrootcert is given), verify-ca
    /// checks the CA, verify-full the CA and the host name. Without
    /// sslrootcert, the system's trusted roots are used.
    private func tlsSettings() throws -> TLSSettings {
        if let root = sslRootCert, sslMode != .disable, !FileManager.default.isReadableFile(atPath: root) {
            throw ConfigurationError(setting: "sslrootcert", "cannot read the CA file '\(root)'")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let root = sslRootCert { tls.trustRoots = .file(root) }
        switch sslMode {
        case .disable:
            return .disable
        case .allow, .prefer:
            tls.certificateVerification = .none
            return .prefer(tls)
        case .require:
            tls.certificateVerification = sslRootCert == nil ? .none : .noHostnameVerification
            return .require(tls)
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
            return .require(tls)
        case .verifyFull:
            tls.certificateVerification = .fullVerification
            return .require(tls)
        }
    }

    /// The URL form, with the password left out, for logs and messages.
    public var redactedURL: String {
        "postgres://\(user)@\(host.hasPrefix("/") ? "[\(host)]" : host):\(port)/\(database)?sslmode=\(sslMode.rawValue)"
    }
}

/// The database could not be reached or refused the connection; carries the
/// reason (refused, timed out, authentication, certificate) in its message.
public struct DatabaseUnreachable: Error, CustomStringConvertible {
    public var url: String
    public var reason: String

    init(url: String, error: any Error) {
        self.url = url
        self.reason = errorText(error)
    }

    public var description: String { "cannot connect to \(url): \(reason)" }
}
