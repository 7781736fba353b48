import Foundation
import Testing
import WorkerEngine

@Suite struct DatabaseConfigTests {
    @Test func aURLGivesEveryPart() throws {
        let config = try DatabaseConfig.parse(url: "postgres://app:p%40ss@db.internal:6543/jobs?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=billing")
        var expected = DatabaseConfig(
            host: "db.internal", port: 6543, user: "app", password: "p@ss", database: "jobs",
            sslMode: .verifyFull, sslRootCert: "/etc/ca.pem")
        expected.applicationName = "billing"
        #expect(config == expected)
        #expect(!config.redactedURL.contains("p@ss"))
    }

    @Test func theURLWinsOverPGVariablesWhichFillInOtherwise() throws {
        let env = ["PGHOST": "/run/postgresql", "PGPORT": "5433", "PGUSER": "worker", "PGDATABASE": "q", "PGSSLMODE": "disable"]
        let fromEnv = try DatabaseConfig.resolve(url: nil, environment: env)
        #expect(fromEnv == DatabaseConfig(host: "/run/postgresql", port: 5433, user: "worker", database: "q", sslMode: .disable))
        let fromURL = try DatabaseConfig.resolve(url: nil, environment: env.merging(["DATABASE_URL": "postgresql://u@h/d"]) { $1 })
        #expect(fromURL.host == "h" && fromURL.user == "u" && fromURL.database == "d" && fromURL.port == 5432)
        let fromFlag = try DatabaseConfig.resolve(url: "postgres://f@flag/x", environment: ["DATABASE_URL": "postgres://u@h/d"])
        #expect(fromFlag.host == "flag")
    }

    @Test func theURLMayComeFromAFileOrASystemdCredentialKeepingThePasswordOutOfTheEnvironment() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("creds-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "postgres://cred:s3cret@credhost/app?sslmode=require\n".write(
            to: directory.appendingPathComponent("database-url"), atomically: true, encoding: .utf8)
        try "postgres://file:pw@filehost/app\n".write(to: directory.appendingPathComponent("url"), atomically: true, encoding: .utf8)

        let credential = try DatabaseConfig.resolve(url: nil, environment: ["CREDENTIALS_DIRECTORY": directory.path, "PGHOST": "pg"])
        #expect(credential.host == "credhost" && credential.password == "s3cret" && credential.sslMode == .require)
        let file = try DatabaseConfig.resolve(url: nil, environment: [
            "DATABASE_URL_FILE": directory.appendingPathComponent("url").path, "CREDENTIALS_DIRECTORY": directory.path,
        ])
        #expect(file.host == "filehost" && file.password == "pw")
        let env = try DatabaseConfig.resolve(url: nil, environment: ["DATABASE_URL": "postgres://e@envhost/x", "CREDENTIALS_DIRECTORY": directory.path])
        #expect(env.host == "envhost")
        // A credential directory without this credential leaves it to the PG* variables.
        let pg = try DatabaseConfig.resolve(url: nil, environment: ["CREDENTIALS_DIRECTORY": "/nonexistent", "PGHOST": "pg"])
        #expect(pg.host == "pg")
        #expect {
            try DatabaseConfig.resolve(url: nil, environment: ["DATABASE_URL_FILE": "/nonexistent/url"])
        } throws: { error in
            "\(error)".contains("DATABASE_URL_FILE") && "\(error)".contains("/nonexistent/url")
        }
    }

    @Test func aConnectTimeoutIsReadAsLibpqReadsItAndReachesTheClient() throws {
        func timeout(_ url: String?, _ env: [String: String] = [:]) throws -> Duration {
            try DatabaseConfig.resolve(url: url, environment: env).connectTimeout
        }
        #expect(try timeout("postgres://h/d") == .seconds(5))
        #expect(try timeout("postgres://h/d?connect_timeout=30") == .seconds(30))
        #expect(try timeout("postgres://h/d?connect_timeout=1") == .seconds(2), "libpq's shortest")
        #expect(try timeout("postgres://h/d?connect_timeout=0") == .seconds(86_400), "no limit, as in libpq")
        #expect(try timeout(nil, ["PGCONNECT_TIMEOUT": "12"]) == .seconds(12))
        let config = try DatabaseConfig.parse(url: "postgres://h/d?connect_timeout=30")
        #expect(try config.clientConfiguration(maximumConnections: 1).options.connectTimeout == .seconds(30))
    }

    @Test func badValuesNameTheSetting() {
        let cases: [(String?, [String: String], String)] = [
            ("mysql://x", [:], "DATABASE_URL"),
            ("postgres://h/d?sslmode=sometimes", [:], "sslmode"),
            ("postgres://h/d?colour=red", [:], "unsupported parameter 'colour'"),
            (nil, ["PGPORT": "http"], "PGPORT"),
            (nil, ["PGSSLMODE": "maybe"], "PGSSLMODE"),
            ("postgres://h/d?connect_timeout=soon", [:], "connect_timeout: 'soon' is not a whole number of seconds"),
            (nil, ["PGCONNECT_TIMEOUT": "5s"], "PGCONNECT_TIMEOUT"),
            ("postgres://h/d?connect_timeout=10000000000000000", [:], "not a whole number of seconds up to 2147483647"),
        ]
        for (url, env, fragment) in cases {
            #expect {
                try DatabaseConfig.resolve(url: url, environment: env)
            } throws: { error in
                (error as? ConfigurationError).map { "\($0)".contains(fragment) } ?? false
            }
        }
    }
}
