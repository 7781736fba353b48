import Foundation
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `workerctl` as an operator runs it: the real binary against a real database.
@Suite(.timeLimit(.minutes(2))) struct WorkerctlTests {
    @Test func everyCommandHasHelp() async throws {
        for command in [[], ["migrate"], ["stats"], ["enqueue"], ["dlq"], ["dlq", "list"], ["dlq", "show"], ["dlq", "purge"], ["redrive"],
                        ["jobs"], ["jobs", "list"], ["jobs", "show"], ["jobs", "cancel"], ["jobs", "retry"], ["keys"], ["keys", "show"],
                        ["pause"], ["resume"], ["pauses"], ["limits", "set"], ["schedules", "set"], ["workers"]] {
            let result = try await runTool("workerctl", command + ["--help"])
            #expect(result.status == 0, "\(command): \(result)")
            #expect(result.stdout.contains("USAGE: workerctl"), "\(command): \(result)")
        }
    }

    @Test func migrateAppliesOnceAndASecondRunChangesNothing() async throws {
        try await withEmptyTestDatabase { db in
            let env = ["WORKER_SQL_DIR": repositorySQLDirectory.path]
            let first = try await runTool("workerctl", ["migrate"], database: db, environment: env)
            #expect(first.status == 0, "\(first)")
            #expect(first.stdout.contains("applied 001_queue"))
            #expect(!first.stderr.contains("001_queue"), "printed once, not logged too: \(first.stderr)")
            let second = try await runTool("workerctl", ["migrate"], database: db, environment: env)
            #expect(second.status == 0, "\(second)")
            #expect(second.stdout.contains("schema is up to date at version \(Migrator.requiredVersion)"))
            #expect(try await db.int("SELECT count(*)::int FROM worker.schema_migrations") == Migrator.requiredVersion)
        }
    }

    @Test func migrateDryRunShowsWhatItWouldDoAndChangesNothing() async throws {
        let files = FileManager.default
        let directory = files.temporaryDirectory.appendingPathComponent("sql-\(UUID().uuidString)")
        defer { try? files.removeItem(at: directory) }
        try files.copyItem(at: repositorySQLDirectory, to: directory)
        try "CREATE TABLE worker.dry_run_probe (id int);\n"
            .write(to: directory.appendingPathComponent("999_probe.sql"), atomically: true, encoding: .utf8)
        try await withTestDatabase { db in
            let dryRun = ["migrate", "--dry-run", "--sql-dir", directory.path]
            func state(_ result: ToolResult, of version: Int) -> String? {
                result.stdout.split(separator: "\n").first { $0.hasPrefix("\(version) ") }?
                    .split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first.map(String.init)
            }
            let pending = try await runTool("workerctl", dryRun, database: db)
            #expect(pending.status == 0, "\(pending)")
            #expect(state(pending, of: 1) == "applied" && state(pending, of: 999) == "pending", "\(pending)")
            #expect(pending.stdout.contains("1 pending: `workerctl migrate` would apply it"), "\(pending)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.schema_migrations") == Migrator.requiredVersion)
            #expect(try await db.int("SELECT count(*)::int FROM pg_tables WHERE tablename = 'dry_run_probe'") == 0)

            let json = try await runTool("workerctl", dryRun + ["--json"], database: db)
            let plan = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]], "\(json)")
            #expect(plan.count == Migrator.requiredVersion + 1)
            #expect(plan.first?["state"] as? String == "applied" && plan.first?["applied_at"] is String, "\(plan.first ?? [:])")
            #expect(plan.last?["name"] as? String == "999_probe" && plan.last?["state"] as? String == "pending")

            // An edited file makes migrate refuse; a file gone leaves the database ahead.
            let first = directory.appendingPathComponent("001_queue.sql")
            try (try String(contentsOf: first, encoding: .utf8) + "\n-- edited\n").write(to: first, atomically: true, encoding: .utf8)
            let last = try #require(try files.contentsOfDirectory(atPath: directory.path).sorted().dropLast().last)
            try files.removeItem(at: directory.appendingPathComponent(last))
            let changed = try await runTool("workerctl", dryRun, database: db)
            #expect(changed.status == 1, "\(changed)")
            #expect(state(changed, of: 1) == "changed" && state(changed, of: Migrator.requiredVersion) == "missing", "\(changed)")
            #expect(changed.stderr.contains("migration 1 (001_queue) was changed after it was applied"), "\(changed)")
            #expect(changed.stdout.contains("is applied but not in \(directory.path)"), "\(changed)")

            let refused = try await runTool("workerctl", ["migrate", "--json", "--sql-dir", directory.path], database: db)
            #expect(refused.status == 64 && refused.stderr.contains("--json goes with --dry-run"), "\(refused)")
        }
    }

    @Test func migrateStartedByNameFromPathFindsTheInstallsSQL() async throws {
        // Laid out as the README's deploy section installs it.
        let files = FileManager.default
        let prefix = files.temporaryDirectory.appendingPathComponent("install-\(UUID().uuidString)")
        defer { try? files.removeItem(at: prefix) }
        let bin = prefix.appendingPathComponent("bin"), elsewhere = prefix.appendingPathComponent("var/lib/worker")
        for directory in [bin, elsewhere, prefix.appendingPathComponent("share/worker")] {
            try files.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        let built = try ToolProcess.executable("workerctl"), installed = bin.appendingPathComponent("workerctl")
        do { try files.linkItem(at: built, to: installed) } catch { try files.copyItem(at: built, to: installed) }
        try files.copyItem(at: repositorySQLDirectory, to: prefix.appendingPathComponent("share/worker/sql"))
        try await withEmptyTestDatabase { db in
            // Found on PATH, its argv[0] is the bare name; and no sql/ is in the directory it runs in.
            let result = try await ToolProcess(
                executable: URL(fileURLWithPath: "/bin/sh"), ["-c", "cd \"$1\" && exec workerctl migrate", "sh", elsewhere.path],
                environment: ["PATH": "\(bin.path):/usr/bin:/bin", "DATABASE_URL": db.url]
            ).result()
            #expect(result.status == 0, "\(result)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.schema_migrations") == Migrator.requiredVersion)
        }
    }

    @Test func commandsOnADatabaseWithoutTheSchemaSayToMigrate() async throws {
        try await withEmptyTestDatabase { db in
            for arguments in [["stats"], ["sweep"], ["dlq", "list"], ["redrive", "--all", "--dry-run"], ["pause", "billing"]] {
                let result = try await runTool("workerctl", arguments, database: db)
                #expect(result.status == 1 && result.stderr.contains("run `workerctl migrate`"), "\(arguments): \(result)")
                // The server's message, not a dump of the client's error values.
                #expect(result.stderr.split(separator: "\n").count <= 2, "\(arguments): \(result)")
            }
        }
    }

    @Test func aNegativePriorityIsAValueNotAnOption() async throws {
        try await withTestDatabase { db in
            let result = try await runTool("workerctl", ["enqueue", "--kind", "noop", "--priority", "-5"], database: db)
            #expect(result.status == 0, "\(result)")
            #expect(try await db.int("SELECT priority::int FROM worker.jobs") == -5)
        }
    }

    @Test func enqueuedJobsShowInStatsAsJSONAndAsATable() async throws {
        try await withTestDatabase { db in
            let now = try await runTool("workerctl", ["enqueue", "--queue", "mail", "--kind", "noop", "--count", "3"], database: db)
            #expect(now.status == 0 && now.stdout.contains("enqueued 3 jobs"), "\(now)")
            let later = try await runTool("workerctl", ["enqueue", "--queue", "mail", "--kind", "noop", "--delay", "1h"], database: db)
            #expect(later.status == 0 && later.stdout.contains("enqueued job"), "\(later)")

            let json = try await runTool("workerctl", ["stats", "--json"], database: db)
            #expect(json.status == 0, "\(json)")
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            struct Report: Decodable { var queues: [QueueStats]; var kinds: [KindOutcomes] }
            let stats = try decoder.decode(Report.self, from: Data(json.stdout.utf8))
            let mail = try #require(stats.queues.first { $0.queue == "mail" })
            #expect(mail.ready == 3 && mail.delayed == 1 && mail.inFlight == 0 && mail.dead == 0)

            let table = try await runTool("workerctl", ["stats", "--queue", "mail"], database: db)
            #expect(table.status == 0)
            let row = try #require(table.stdout.split(separator: "\n").first { $0.hasPrefix("mail") })
            #expect(row.split(separator: " ").prefix(6) == ["mail", "3", "0", "1", "0", "0"])
        }
    }

    @Test func statsShowWhatWorkersFinishedInTheLastMinuteAndDeadLettersByReasonPerQueue() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", payload: #"{"ok": true}"#), count: 7)
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test", payload: #"{"ok": false}"#), count: 2)
            _ = try await db.queue.enqueue(NewJob(queue: "sms", kind: "test", payload: #"{"ok": false}"#))
            let handler = RecordingHandler { job, _ in
                if job.payload.contains("false") { throw JobError.nonRetryable("refused by the provider") }
            }
            let config = WorkerConfiguration(queues: ["mail", "sms"], concurrency: 2, batchSize: 3, workerID: "stats")
            let worker = Worker(client: db.client, configuration: config, handlers: .testing(handler), logger: db.logger)
            let running = Task { try await worker.run() }
            try await eventually("both queues to drain") { try await db.jobCount() == 0 }
            worker.stop()
            try await running.value  // writes its last throughput on the way out

            let json = try await runTool("workerctl", ["stats", "--json", "--queue", "mail"], database: db)
            #expect(json.status == 0, "\(json)")
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            decoder.dateDecodingStrategy = .iso8601
            struct Report: Decodable { var queues: [QueueStats]; var kinds: [KindOutcomes]; var deadLetters: [DeadLetterCount] }
            let report = try decoder.decode(Report.self, from: Data(json.stdout.utf8))
            #expect(report.queues.map(\.queue) == ["mail"])
            #expect(report.queues.first?.finishedLastMinute == 9 && report.queues.first?.dead == 2)
            #expect(report.deadLetters.map { "\($0.queue) \($0.reason) \($0.count)" } == ["mail non_retryable 2"])
            #expect(report.kinds.isEmpty, "kinds are counted across queues, so a queue's report leaves them out")
            let fleet = try decoder.decode(
                Report.self, from: Data(try await runTool("workerctl", ["stats", "--json"], database: db).stdout.utf8))
            let test = try #require(fleet.kinds.first { $0.kind == "test" })
            #expect(test.doneLastMinute == 7 && test.deadLetteredLastMinute == 3 && test.retriedLastMinute == 0)

            let table = try await runTool("workerctl", ["stats"], database: db)
            let lines = table.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            // QUEUE READY IN_FLIGHT DELAYED BLOCKED DEAD OLDEST_READY DONE/MIN ...
            #expect(lines.first { $0.first == "sms" }?[7] == "1", "\(table)")
            #expect(lines.contains { $0.prefix(3) == ["sms", "non_retryable", "1"] }, "\(table)")
        }
    }

    @Test func statsWatchRedrawsInPlaceAndStreamsJSONLines() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "noop"), count: 2)
            let table = try ToolProcess("workerctl", ["stats", "--watch", "--interval", "100ms"], environment: ["DATABASE_URL": db.url])
            try await eventually("three refreshes") { table.stdoutSoFar.components(separatedBy: "\u{1B}[H\u{1B}[2J").count > 3 }
            // A new job shows up in a later frame.
            _ = try await db.queue.enqueue(NewJob(queue: "sms", kind: "noop"))
            try await eventually("the new queue in a frame") { table.stdoutSoFar.contains("\nsms ") }
            table.send(SIGINT)
            _ = await table.result()

            let json = try ToolProcess("workerctl", ["stats", "--watch", "--json", "--interval", "100ms"], environment: ["DATABASE_URL": db.url])
            try await eventually("two JSON lines") { json.stdoutSoFar.split(separator: "\n").count >= 2 }
            json.send(SIGINT)
            let lines = await json.result().stdout.split(separator: "\n")
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            struct Report: Decodable { var queues: [QueueStats] }
            for line in lines {
                let report = try decoder.decode(Report.self, from: Data(line.utf8))
                #expect(report.queues.map(\.ready) == [2, 1])
            }

            let bad = try await runTool("workerctl", ["stats", "--watch", "--interval", "soon"], database: db)
            #expect(bad.status != 0 && bad.stderr.contains("--interval"), "\(bad)")
        }
    }

    @Test func badArgumentsSayWhatIsWrongExitNonZeroAndChangeNothing() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(kind: "test"))
            let claimed = try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w")
            let failing = HandlerRegistry.testing(RecordingHandler { _, _ in throw JobError.nonRetryable("no") })
            _ = try await BatchProcessor(client: db.client, handlers: failing, workerID: "w", logger: db.logger).process(claimed)
            #expect(try await db.deadCount() == 1)

            let cases: [([String], String)] = [
                (["enqueue", "--kind", "noop", "--payload", "{not json"], "--payload is not valid JSON"),
                (["enqueue", "--kind", "noop", "--count", "0"], "--count"),
                (["enqueue", "--kind", "noop", "--priority", "40000"], "--priority"),
                (["enqueue", "--kind", "noop", "--delay", "soon"], "--delay"),
                (["enqueue", "--payload", "{}"], "--kind"),
                (["redrive"], "give a filter"),
                (["redrive", "--all", "--limit", "0"], "--limit"),
                (["redrive", "--since", "last tuesday"], "--since"),
                (["dlq", "list", "--limit", "0"], "--limit"),
                (["dlq", "show", "abc"], "id"),
                (["dlq", "show", "999999"], "no dead letter with id 999999"),
                (["dlq", "purge"], "give a filter"),
                (["dlq", "purge", "--all", "--limit", "0"], "--limit"),
                (["dlq", "purge", "--until", "a month ago"], "--until"),
                (["stats", "--colour"], "--colour"),
                (["frobnicate"], "frobnicate"),
                (["stats", "--database-url", "mysql://db/x"], "DATABASE_URL"),
                (["redrive", "--all", "--rate", "0"], "--rate"),
                // A negative number is the option's value, and wrong for what it says, not a missing value.
                (["dlq", "list", "--limit", "-1"], "--limit must be in"),
                (["redrive", "--all", "--limit", "-5"], "--limit must be at least 1"),
                (["pause", ""], "QUEUE"),
                (["sweep", "--batch-size", "0"], "--batch-size"),
                (["migrate", "--sql-dir", "/nonexistent/sql"], "--sql-dir"),
                (["resume", "billing"], "queue 'billing' is not paused"),
                (["jobs", "cancel"], "give a filter"),
                (["jobs", "cancel", "--state", "ready"], "give a filter"),
                (["jobs", "retry"], "give a filter"),
                (["jobs", "list", "--state", "running"], "--state must be ready, in_flight, delayed or blocked"),
                (["jobs", "cancel", "--all", "--limit", "0"], "--limit"),
                (["jobs", "show", "999999"], "no job with id 999999"),
            ]
            // Values past what the columns, the clock or the shell's intent allow: the option named, usage status.
            let usage: [([String], String)] = [
                (["enqueue", "--kind", "noop", "--delay", "99999999999999h"], "--delay: '99999999999999h' is longer than 100 years"),
                (["dlq", "list", "--since", "999999999d"], "--since"),
                (["enqueue", "--kind", "noop", "--idempotency-key", ""], "--idempotency-key is empty"),
                (["enqueue", "--kind", "noop", "--ordering-key", ""], "--ordering-key is empty"),
                (["limits", "set", "q", "--max-in-flight", "99999999999"], "--max-in-flight must be in 1...2147483647"),
                (["enqueue", "--kind", "noop", "--max-attempts", "99999999999"], "--max-attempts must be in 1...2147483647"),
                (["enqueue", "--kind", "noop", "--payload", #"{"a": "\u0000"}"#], "jsonb cannot store"),
                (["jobs", "cancel", "--all", "--queue", "default"], "--all means every job"),
                (["jobs", "cancel", "--all", "--reason", ""], "--reason is empty"),
                (["dlq", "purge", "--all", "--reason", "non_retryable"], "--all means every dead letter"),
                (["dlq", "list", "--since", "1h", "--until", "2h"], "--since 1h is not before --until 2h"),
                (["stats", "--watch", "--interval", "-1s"], "'-1s' is not a duration"),
                (["stats", "--database-url", "mysql://db/x"], "DATABASE_URL"),
                (["migrate", "--sql-dir", "/nonexistent/sql"], "--sql-dir"),
                (["migrate", "--lock-timeout", "soon"], "invalid --lock-timeout: 'soon' is not a duration"),
                (["migrate", "--lock-timeout", "25d"], "--lock-timeout must be 0 (no limit) or 1ms to 24d"),
            ]
            for (arguments, fragment) in cases + usage {
                let result = try await runTool("workerctl", arguments, database: db)
                #expect(result.status != 0, "\(arguments): \(result)")
                #expect(result.stderr.contains(fragment), "\(arguments) should say \(fragment): \(result)")
            }
            for (arguments, _) in usage {
                let result = try await runTool("workerctl", arguments, database: db)
                #expect(result.status == 64, "\(arguments): \(result)")
            }
            // A command that ran and found nothing to do is not a usage error.
            for arguments in [["dlq", "show", "999999"], ["resume", "billing"]] {
                let result = try await runTool("workerctl", arguments, database: db)
                #expect(result.status == 1 && !result.stderr.contains("Usage:"), "\(arguments): \(result)")
            }
            #expect(try await db.jobCount() == 0)
            #expect(try await db.deadCount() == 1)
        }
    }

    /// An id that names nothing is said so (exit 1), as `jobs cancel` does;
    /// a kind no handler takes is noted before its jobs die of it.
    @Test func idsThatMatchNothingAreNamedAndUnknownKindsNoted() async throws {
        try await withTestDatabase { db in
            try await db.execute("""
                INSERT INTO worker.dead_letters (id, queue, kind, payload, priority, attempts, created_at, redrive_count, reason, errors)
                VALUES (17, 'default', 'noop', '{}', 0, 3, now(), 0, 'max_attempts', '[]'),
                       (18, 'default', 'noop', '{}', 0, 3, now(), 0, 'max_attempts', '[]')
                """)
            let redrive = try await runTool("workerctl", ["redrive", "--id", "17", "--id", "9999"], database: db)
            #expect(redrive.status == 1 && redrive.stdout.contains("redrove job 17"), "\(redrive)")
            #expect(redrive.stderr.contains("not redriven: 9999 (no such dead letter"), "\(redrive)")
            let asJSON = try await runTool("workerctl", ["redrive", "--id", "9997", "--json"], database: db)
            #expect(asJSON.status == 1 && asJSON.stderr.contains("not redriven: 9997"), "\(asJSON)")
            let purge = try await runTool("workerctl", ["dlq", "purge", "--id", "18", "--id", "9998"], database: db)
            #expect(purge.status == 1 && purge.stdout.contains("purged 1 dead letter"), "\(purge)")
            #expect(purge.stderr.contains("not purged: 9998 (no such dead letter"), "\(purge)")
            #expect(try await db.deadCount() == 0)

            // An id left out by --limit is not one that was not found.
            let jobs = try await db.queue.enqueue(NewJob(kind: "noop"), count: 2)
            let (first, second) = ("\(jobs.lowerBound)", "\(jobs.upperBound)")
            let limited = try await runTool("workerctl", ["jobs", "cancel", "--id", first, "--id", second, "--limit", "1", "--dry-run"], database: db)
            #expect(limited.status == 0 && limited.stdout.contains("would cancel 1 job"), "\(limited)")
            let absent = try await runTool("workerctl", ["jobs", "cancel", "--id", first, "--id", "9999", "--limit", "5", "--dry-run"], database: db)
            #expect(absent.status == 1 && absent.stderr.contains("would not be cancelled: 9999 (no such job"), "\(absent)")

            let known = try await runTool("workerctl", ["enqueue", "--kind", "noop"], database: db)
            #expect(known.status == 0 && !known.stdout.contains("note:"), "\(known)")
            let unknown = try await runTool("workerctl", ["enqueue", "--kind", "report.build"], database: db)
            #expect(unknown.status == 0, "\(unknown)")
            #expect(unknown.stdout.contains("no handler for kind 'report.build' (it has booking.requested, demo.task, noop"), "\(unknown)")

            // A queue with nothing ready has no oldest ready job.
            _ = try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
            let text = try await runTool("workerctl", ["stats"], database: db)
            let row = try #require(text.stdout.split(separator: "\n").first { $0.hasPrefix("default ") })
            #expect(row.split(separator: " ", omittingEmptySubsequences: true)[6] == "-", "\(text)")
        }
    }

    @Test func deadLettersAreListedShownAndRedrivenWithDryRunFirst() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { job, _ in throw JobError.nonRetryable("card declined for \(job.id)") }
            let ids = try await db.queue.enqueue(NewJob(queue: "billing", kind: "test", payload: #"{"n":1}"#), count: 2)
            let claimed = try await db.queue.claim(queue: "billing", limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
            _ = try await BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger).process(claimed)

            let list = try await runTool("workerctl", ["dlq", "list", "--queue", "billing"], database: db)
            #expect(list.status == 0, "\(list)")
            for id in ids { #expect(list.stdout.contains("card declined for \(id)")) }

            let show = try await runTool("workerctl", ["dlq", "show", "\(ids.lowerBound)"], database: db)
            #expect(show.status == 0, "\(show)")
            #expect(show.stdout.contains("reason:          non_retryable"))
            #expect(show.stdout.contains(#"payload:         {"n": 1}"#))
            // As JSON, the payload and the error history are JSON, not strings of it.
            let shown = try await runTool("workerctl", ["dlq", "show", "\(ids.lowerBound)", "--json"], database: db)
            let letter = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any], "\(shown)")
            #expect((letter["payload"] as? [String: Any])?["n"] as? Int == 1, "\(shown)")
            #expect((letter["errors"] as? [[String: Any]])?.first?["error"] as? String == "card declined for \(ids.lowerBound)")
            #expect(letter["redrive_count"] as? Int == 0 && letter["reason"] as? String == "non_retryable")

            let dryRun = try await runTool("workerctl", ["redrive", "--queue", "billing", "--dry-run"], database: db)
            #expect(dryRun.status == 0 && dryRun.stdout.contains("would redrive 2 jobs"), "\(dryRun)")
            #expect(try await db.deadCount() == 2)
            #expect(try await db.jobCount() == 0)

            let one = try await runTool("workerctl", ["redrive", "--id", "\(ids.lowerBound)"], database: db)
            #expect(one.stdout.contains("redrove job \(ids.lowerBound) queue=billing kind=test reason=non_retryable redrive_count=1"), "\(one)")
            let rest = try await runTool("workerctl", ["redrive", "--all", "--json"], database: db)
            let moved = try JSONSerialization.jsonObject(with: Data(rest.stdout.utf8)) as? [[String: Any]]
            #expect(moved?.compactMap { $0["id"] as? Int } == [Int(ids.upperBound)], "\(rest)")
            #expect(try await db.deadCount() == 0)
            #expect(try await db.jobCount() == 2)
        }
    }

    @Test func deadLettersArePurgedByFilterWithDryRunFirst() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler { _, _ in throw JobError.nonRetryable("no") }
            for queue in ["billing", "billing", "mail"] {
                _ = try await db.queue.enqueue(NewJob(queue: queue, kind: "test", payload: "{}"))
                let claimed = try await db.queue.claim(queue: queue, limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
                _ = try await BatchProcessor(client: db.client, handlers: .testing(handler), workerID: "w", logger: db.logger).process(claimed)
            }
            #expect(try await db.deadCount() == 3)

            let dryRun = try await runTool("workerctl", ["dlq", "purge", "--queue", "billing", "--dry-run"], database: db)
            #expect(dryRun.status == 0 && dryRun.stdout.contains("would purge 2 dead letters"), "\(dryRun)")
            #expect(try await db.deadCount() == 3)
            // None is a day old yet.
            let old = try await runTool("workerctl", ["dlq", "purge", "--until", "1d"], database: db)
            #expect(old.status == 0 && old.stdout.contains("purged 0 dead letters"), "\(old)")
            let billing = try await runTool("workerctl", ["dlq", "purge", "--queue", "billing", "--json"], database: db)
            let result = try JSONSerialization.jsonObject(with: Data(billing.stdout.utf8)) as? [String: Any]
            #expect(result?["purged"] as? Int == 2 && result?["dry_run"] as? Bool == false, "\(billing)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE queue = 'mail'") == 1)
            #expect(try await db.deadCount() == 1)
            #expect(try await db.jobCount() == 0)
        }
    }

    @Test func quotesAndSQLInArgumentsArePlainValues() async throws {
        try await withTestDatabase { db in
            let hostile = "q'; DROP TABLE worker.jobs; --"
            let enqueue = try await runTool("workerctl", ["enqueue", "--queue", hostile, "--kind", "x\"y", "--payload", #"{"s":"'); DELETE FROM worker.jobs; --"}"#], database: db)
            #expect(enqueue.status == 0, "\(enqueue)")
            let stats = try await runTool("workerctl", ["stats", "--json", "--queue", hostile], database: db)
            #expect(stats.stdout.contains(#""ready" : 1"#), "\(stats)")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE queue = \(hostile) AND kind = 'x\"y'") == 1)
        }
    }
}
