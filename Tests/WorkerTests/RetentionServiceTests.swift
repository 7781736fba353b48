import Foundation
import Testing
import WorkerTestSupport

/// deploy/worker-retention.service, whose units `scripts/check-units`
/// verifies: its command, as systemd would run it with its default and as
/// the role it names, deletes the dead letters past the retention only.
@Suite(.timeLimit(.minutes(2))) struct RetentionServiceTests {
    @Test func theRetentionServiceDeletesTheDeadLettersPastItsDefaultRetentionAsTheAdminRole() async throws {
        let unit = try String(contentsOf: repositoryRoot.appendingPathComponent("deploy/worker-retention.service"), encoding: .utf8)
        func setting(_ name: String) throws -> String {
            let line = try #require(unit.split(separator: "\n").first { $0.hasPrefix(name + "=") }, "\(name) in the unit")
            return String(line.dropFirst(name.count + 1))
        }
        let retention = try setting("Environment").replacing("WORKER_DLQ_RETENTION=", with: "")
        #expect(retention == "14d")
        #expect(try setting("LoadCredential") == "database-url:/etc/worker/admin-database-url")
        let command = try setting("ExecStart").split(separator: " ").map { $0 == "${WORKER_DLQ_RETENTION}" ? retention : String($0) }
        #expect(command.first == "/usr/local/bin/workerctl")

        try await withTestDatabase { db in
            for (id, age) in [(1, "15 days"), (2, "13 days"), (3, "1 hour")] {
                try await db.execute("""
                    INSERT INTO worker.dead_letters (id, queue, kind, payload, priority, attempts, created_at, redrive_count,
                                                     reason, errors, failed_at)
                    VALUES (\(id), 'default', 'noop', '{}', 0, 1, now() - \(age)::interval, 0, 'max_attempts', '[]',
                            now() - \(age)::interval)
                    """)
            }
            try await db.withLogin(in: "worker_admin") { admin in
                let run = try await runTool("workerctl", Array(command.dropFirst()), environment: ["DATABASE_URL": admin.url])
                #expect(run.status == 0, "\(run)")
            }
            let left = try await db.string("SELECT string_agg(id::text, ',' ORDER BY id) FROM worker.dead_letters")
            #expect(left == "2,3")
            // A retention of 0, which could be taken for "keep them", would purge them all.
            for zero in ["0", "0s"] {
                let refused = try await runTool("workerctl", ["dlq", "purge", "--until", zero], database: db)
                #expect(refused.status == 64 && refused.stderr.contains("matches every dead letter up to now: leave --until out, or give --all alone"), "\(refused)")
            }
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters") == 2)
        }
    }
}
