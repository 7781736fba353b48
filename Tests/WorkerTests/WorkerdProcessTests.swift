import Foundation
import Testing
import WorkerEngine
import WorkerTestSupport

/// `workerd` as systemd runs it: the real binary, real signals, a real database.
@Suite(.timeLimit(.minutes(2))) struct WorkerdProcessTests {
    @Test func invalidConfigurationStopsStartupNamingTheSetting() async throws {
        let cases: [([String], [String: String], String)] = [
            (["--concurrency", "0"], [:], "--concurrency"),
            (["--batch-size", "-1"], [:], "--batch-size"),
            (["--stop-timeout", "-5s"], [:], "--stop-timeout"),
            (["--visibility-timeout", "banana"], [:], "--visibility-timeout"),
            ([], ["WORKERD_BATCH_SIZE", "-3"].pairs, "WORKERD_BATCH_SIZE"),
            ([], ["DATABASE_URL": "mysql://db/jobs"], "DATABASE_URL"),
            (["--retry", "refund.requested:rate=0.5"], [:], "--retry"),
            (["--log-level", "loud"], [:], "--log-level"),
            (["--log-format", "xml"], [:], "--log-format"),
            (["--metrics-address", "9464"], [:], "--metrics-address"),
            ([], ["WORKERD_METRICS_ADDRESS": "127.0.0.1:99999"], "WORKERD_METRICS_ADDRESS"),
            (["--metrics-address", "metrics.invalid:9464"], [:], "not an IP address"),
            (["--idempotency-ttl", "refund:1h"], [:], "no handler for kind 'refund'"),
            ([], ["DATABASE_URL": "postgres://db/jobs?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"], "sslrootcert"),
            (["--migrate", "--sql-dir", "/nonexistent/sql"], [:], "--sql-dir"),
        ]
        for (arguments, environment, setting) in cases {
            let result = try await runTool("workerd", arguments, environment: environment)
            #expect(result.status == 78, "\(arguments) \(environment): \(result)")
            #expect(result.stderr.contains(setting), "\(arguments) \(environment) should name \(setting): \(result)")
        }
        let unknown = try await runTool("workerd", ["--colour", "blue"])
        #expect(unknown.status != 0 && unknown.stderr.contains("--colour"), "\(unknown)")
    }

    @Test func checkPrintsTheSettingsInForceAndWhetherTheDatabaseIsReady() async throws {
        try await withTestDatabase { db in
            try await QueuePauses(client: db.client, logger: db.logger).pause("reports")
            try await QueueLimits(client: db.client, logger: db.logger).set("billing", maxInFlight: 7)
            let arguments = ["--check", "--queues", "billing,reports", "--queue-concurrency", "reports=2", "--concurrency", "4",
                             "--retry", "refund.requested:base=2s,timeout=none"]
            let ready = try await runTool("workerd", arguments, environment: ["DATABASE_URL": db.url])
            #expect(ready.status == 0, "\(ready)")
            func setting(_ name: String) -> String? {
                ready.stdout.split(separator: "\n").first { $0.hasPrefix(name + "  ") }
                    .map { $0.dropFirst(name.count).trimmingCharacters(in: .whitespaces) }
            }
            #expect(setting("lanes") == "6: 2 for reports, 4 shared by billing", "\(ready)")
            #expect(setting("connections") == "up to 14", "\(ready)")
            #expect(setting("retry refund.requested") == "base=2s,rate=2,cap=5m,max-attempts=10,max-age=none,timeout=none", "\(ready)")
            #expect(setting("idempotency ttl refund.requested") == "24h", "\(ready)")
            #expect(setting("database")?.hasPrefix("postgres://") == true, "\(ready)")
            #expect(ready.stdout.contains("schema at version \(Migrator.requiredVersion); workerd would start"), "\(ready)")
            #expect(ready.stdout.contains("queue billing: at most 7 in flight across the fleet"), "\(ready)")
            #expect(ready.stdout.contains("queue reports: paused"), "\(ready)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.workers") == 0, "a check starts no worker")
        }
        try await withEmptyTestDatabase { db in
            let outdated = try await runTool("workerd", ["--check"], environment: ["DATABASE_URL": db.url])
            #expect(outdated.status == 1 && outdated.stderr.contains("run `workerctl migrate`"), "\(outdated)")
        }
        let unreachable = try await runTool("workerd", ["--check"], environment: ["DATABASE_URL": "postgres://u:secret@127.0.0.1:1/db"])
        #expect(unreachable.status == 1 && unreachable.stderr.contains("cannot connect"), "\(unreachable)")
        #expect(!unreachable.stdout.contains("secret") && !unreachable.stderr.contains("secret"), "\(unreachable)")
        let invalid = try await runTool("workerd", ["--check", "--batch-size", "0"])
        #expect(invalid.status == 78 && invalid.stderr.contains("--batch-size"), "\(invalid)")
        let both = try await runTool("workerd", ["--check", "--migrate"])
        #expect(both.status == 64 && both.stderr.contains("--check changes nothing"), "\(both)")
    }

    @Test func processesDemoEventsThenDrainsOnSIGTERMAndExitsZero() async throws {
        try await withTestDatabase { db in
            // One lane, one batch of five: the first job is mid-work when SIGTERM
            // comes, with ten seconds' work to spare for a loaded machine to act on it.
            let slow = try await db.queue.enqueue(NewJob(kind: "demo.task", payload: #"{"work_ms": 10000}"#, priority: -1))
            _ = try await db.queue.enqueue(NewJob(kind: "demo.task", payload: #"{"work_ms": 0}"#), count: 5)
            let workerd = try ToolProcess("workerd", [
                "--concurrency", "1", "--batch-size", "5", "--stop-timeout", "60s", "--worker-id", "drain-test",
                "--log-level", "debug",
            ], environment: ["DATABASE_URL": db.url])
            // Claimed is not started: a job claimed but not yet started is given back.
            try await eventually("workerd to start the slow job") {
                workerd.stderrSoFar.split(separator: "\n").contains { $0.contains("job_id=\(slow) ") && $0.hasSuffix("job started") }
            }
            workerd.send(SIGTERM)
            let result = await workerd.result()
            #expect(result.status == 0, "\(result)")
            #expect(result.stderr.contains("worker stopped"), "\(result)")

            // The job at hand finished (a drain cut short by the stop timeout would have cancelled it); the rest of its batch is back in the queue as if never claimed.
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(slow)") == 0, "\(result)")
            #expect(try await db.jobCount() == 5)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE lease_token IS NOT NULL OR attempts <> 0") == 0)
            #expect(try await db.deadCount() == 0)
        }
    }

    @Test func refusesToStartOnADatabaseWithoutTheSchemaUnlessToldToMigrate() async throws {
        try await withEmptyTestDatabase { db in
            let refused = try await runTool("workerd", ["--worker-id", "m"], environment: ["DATABASE_URL": db.url])
            #expect(refused.status != 0 && refused.stderr.contains("run `workerctl migrate`"), "\(refused)")

            let run = try ToolProcess("workerd", ["--worker-id", "m", "--migrate", "--sql-dir", repositorySQLDirectory.path],
                                      environment: ["DATABASE_URL": db.url])
            try await eventually("workerd to migrate the database") {
                (try? await db.int("SELECT count(*)::int FROM worker.schema_migrations")) == Migrator.requiredVersion
            }
            _ = try await db.queue.enqueue(NewJob(kind: "noop"), count: 3)
            try await eventually("workerd to run the jobs") { try await db.jobCount() == 0 }
            run.send(SIGINT)
            let result = await run.result()
            #expect(result.status == 0, "\(result)")
        }
    }
}

extension Array where Element == String {
    /// `["A", "1"].pairs` is `["A": "1"]`: keeps case tables on one line.
    fileprivate var pairs: [String: String] { [self[0]: self[1]] }
}
