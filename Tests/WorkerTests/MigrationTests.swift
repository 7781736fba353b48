import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct MigrationTests {
    let migrations = try! Migration.load(from: repositorySQLDirectory)

    @Test func migratesAnEmptyDatabaseOnceAndASecondRunChangesNothing() async throws {
        try await withEmptyTestDatabase { db in
            let migrator = Migrator(client: db.client, logger: db.logger)
            #expect(try await migrator.currentVersion() == 0)
            let first = try await migrator.migrate(migrations)
            #expect(first.map(\.version) == migrations.map(\.version))
            let before = try await schemaFingerprint(db)
            let second = try await migrator.migrate(migrations)
            #expect(second.isEmpty)
            #expect(try await schemaFingerprint(db) == before)
            #expect(try await migrator.currentVersion() == Migrator.requiredVersion)
            #expect(try await db.int("SELECT count(*)::int FROM worker.schema_migrations") == migrations.count)
        }
    }

    @Test func aPlanOfAnEmptyDatabaseIsEveryFilePendingAndMigrateAppliesThatPlan() async throws {
        try await withEmptyTestDatabase { db in
            let migrator = Migrator(client: db.client, logger: db.logger)
            let plan = try await migrator.plan(migrations)
            #expect(plan.map(\.state) == migrations.map { _ in .pending })
            #expect(try await migrator.currentVersion() == 0)
            let applied = try await migrator.migrate(migrations)
            #expect(applied.map(\.version) == plan.map(\.version))
            let after = try await migrator.plan(migrations)
            #expect(after.allSatisfy { $0.state == .applied && $0.appliedAt != nil })
        }
    }

    @Test func concurrentMigrationsFromManyHostsApplyEachFileOnce() async throws {
        try await withEmptyTestDatabase { db in
            let applied = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await withPostgresClient(try db.config.clientConfiguration(maximumConnections: 1), logger: db.logger) {
                            try await Migrator(client: $0, logger: db.logger).migrate(migrations).count
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(applied == migrations.count)
            #expect(try await db.int("SELECT count(*)::int FROM worker.schema_migrations") == migrations.count)
        }
    }

    @Test func aMigrationEditedAfterItWasAppliedIsRefused() async throws {
        try await withTestDatabase { db in
            var edited = migrations
            edited[0].sql += "\n-- edited\n"
            await #expect(throws: MigrationError.changedAfterApply(version: edited[0].version, name: edited[0].name)) {
                try await Migrator(client: db.client, logger: db.logger).migrate(edited)
            }
        }
    }

    @Test func aFailingMigrationRollsBackWhole() async throws {
        try await withTestDatabase { db in
            let broken = migrations + [Migration(version: 999, name: "999_broken", sql: "CREATE TABLE worker.half (id int); SELECT 1/0;")]
            await #expect(throws: MigrationError.self) {
                try await Migrator(client: db.client, logger: db.logger).migrate(broken)
            }
            let halfTables = try await db.int("SELECT count(*)::int FROM pg_tables WHERE schemaname = 'worker' AND tablename = 'half'")
            let version = try await Migrator(client: db.client, logger: db.logger).currentVersion()
            #expect(halfTables == 0)
            #expect(version == Migrator.requiredVersion)
        }
    }

    /// A statement that fails while it runs, after its row description went
    /// out, reports its error only to whoever reads its rows: the migrator
    /// must name that statement and its error, not the next statement's
    /// "current transaction is aborted".
    @Test func aStatementThatFailsWhileItRunsIsTheOneNamed() async throws {
        try await withTestDatabase { db in
            let failing = "SELECT 1 / (count(*) - count(*)) FROM (SELECT pg_sleep(0.3)) AS slow"
            let broken = migrations + [Migration(version: 999, name: "999_slow_failure", sql: failing + ";\nCREATE TABLE worker.after (id int);")]
            do {
                try await Migrator(client: db.client, logger: db.logger).migrate(broken)
                Issue.record("the migration succeeded")
            } catch let MigrationError.failed(version, _, statement, error) {
                #expect(version == 999)
                #expect(statement == failing)
                #expect(error.contains("division by zero"), "\(error)")
            }
            #expect(try await Migrator(client: db.client, logger: db.logger).currentVersion() == Migrator.requiredVersion)
        }
    }

    /// Runs `body` while another session, `holder`, has read worker.jobs in a
    /// transaction still open: its lock on the table is held until it ends.
    private func whileJobsAreRead(_ db: TestDatabase, _ body: (PostgresConnection) async throws -> Void) async throws {
        try await db.client.withConnection { holder in
            try await holder.query("BEGIN", logger: db.logger)
            try await holder.query("SELECT count(*) FROM worker.jobs", logger: db.logger).drain()
            try await body(holder)
            try await holder.query("ROLLBACK", logger: db.logger)
        }
    }

    /// While a migration waits for a table lock, every later statement on
    /// that table queues behind it: producers and claims would stop for as
    /// long as the lock's holder runs. Past its lock timeout the migration
    /// lets them through, and it is applied once the holder has ended.
    @Test func aMigrationWaitingForALockLetsTheFleetThroughAndIsAppliedLater() async throws {
        try await withTestDatabase { db in
            let alter = Migration(version: 999, name: "999_alter_jobs", sql: "ALTER TABLE worker.jobs ADD COLUMN note text;")
            let migrator = Migrator(
                client: db.client, logger: db.logger, lockTimeout: .seconds(1), lockAttempts: 1000,
                pauseAfterLockTimeout: .milliseconds(20)...(.milliseconds(50)))
            try await whileJobsAreRead(db) { holder in
                async let migrated = migrator.migrate(migrations + [alter])
                try await eventually("the migration waits for its lock") {
                    try await db.int("""
                        SELECT count(*)::int FROM pg_stat_activity
                        WHERE datname = current_database() AND query LIKE 'ALTER TABLE worker.jobs%' AND wait_event_type = 'Lock'
                        """) == 1
                }
                // Queued behind the ALTER; without the lock timeout it would wait for the holder, forever.
                try await db.execute("INSERT INTO worker.jobs (queue, kind, payload) VALUES ('default', 'demo.task', '{}')")
                try await holder.query("ROLLBACK", logger: db.logger)
                #expect(try await migrated.map(\.version) == [999])
            }
            #expect(try await db.int("""
                SELECT count(*)::int FROM information_schema.columns
                WHERE table_schema = 'worker' AND table_name = 'jobs' AND column_name = 'note'
                """) == 1)
        }
    }

    @Test func aMigrationThatNeverGetsItsLockIsRolledBackAndSaysWhy() async throws {
        try await withTestDatabase { db in
            let alter = "ALTER TABLE worker.jobs ADD COLUMN note text"
            let migration = Migration(version: 999, name: "999_alter_jobs", sql: "CREATE TABLE worker.before_alter (id int);\n\(alter);")
            let migrator = Migrator(
                client: db.client, logger: db.logger, lockTimeout: .milliseconds(100), lockAttempts: 2,
                pauseAfterLockTimeout: .milliseconds(10)...(.milliseconds(20)))
            try await whileJobsAreRead(db) { _ in
                let refused = MigrationError.lockNotGranted(
                    version: 999, name: "999_alter_jobs", statement: alter, lockTimeout: "100ms", attempts: 2)
                await #expect(throws: refused) { try await migrator.migrate(migrations + [migration]) }
                #expect(refused.description.contains("waited longer than the lock timeout (100ms) for a lock in each of 2 attempts"))
            }
            #expect(try await migrator.currentVersion() == Migrator.requiredVersion)
            #expect(try await db.int("SELECT count(*)::int FROM pg_tables WHERE tablename = 'before_alter'") == 0)
        }
    }

    /// A migration outside a transaction builds an index with CREATE INDEX
    /// CONCURRENTLY while another host's migrate waits for the migration
    /// lock. The build waits for every older snapshot: a waiter blocked in
    /// pg_advisory_lock holds one, and each would wait for the other until
    /// the deadlock detector failed one of them.
    /// Before sql/026, a job of an ordering key sent with a NULL run time
    /// was parked without one and looked like its key's head: the key's
    /// later jobs waited for ever. The migration parks such jobs properly
    /// and notes their keys, which workerd's maintenance hands over.
    @Test func sql026FreesTheKeysThatAJobWithoutARunTimeHeld() async throws {
        try await withEmptyTestDatabase { db in
            let migrator = Migrator(client: db.client, logger: db.logger)
            _ = try await migrator.migrate(migrations.filter { $0.version <= 25 })
            try await db.execute("INSERT INTO worker.jobs (kind, ordering_key) VALUES ('noop', 'o')")
            try await db.execute("INSERT INTO worker.jobs (kind, ordering_key, visible_at) VALUES ('noop', 'o', NULL), ('noop', 'o', now())")
            try await db.execute("DELETE FROM worker.jobs WHERE id = (SELECT min(id) FROM worker.jobs)")
            #expect(try await db.int("SELECT worker.release_ordering_keys(10)") == 0)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE visible_at <= now()") == 0, "the key is stuck")

            _ = try await migrator.migrate(migrations)
            #expect(try await db.int("SELECT worker.release_ordering_keys(10)") == 1)
            #expect(try await db.int("""
                SELECT count(*)::int FROM worker.jobs WHERE visible_at <= now() AND id = (SELECT min(id) FROM worker.jobs)
                """) == 1, "the stuck job is its key's head, due")
        }
    }

    @Test func anIndexIsBuiltConcurrentlyWhileAnotherHostWaitsToMigrate() async throws {
        try await withTestDatabase { db in
            let index = Migration(version: 999, name: "999_kind_index", sql: """
                -- An index for a test.
                \(Migration.noTransactionMarker)
                CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_kind_idx ON worker.jobs (kind);
                """)
            #expect(!index.runsInTransaction && migrations.filter { !$0.runsInTransaction }.map(\.name) == ["024_job_key_index"])
            let all = migrations + [index]
            let log = LogRecorder()
            try await db.client.withConnection { producer in
                // A producer's transaction still open: the build waits for it, and a
                // snapshot taken meanwhile (the other host's) is older than the build's.
                try await producer.query("BEGIN", logger: db.logger)
                try await producer.query("INSERT INTO worker.jobs (kind) VALUES ('held')", logger: db.logger)
                async let first = Migrator(client: db.client, logger: db.logger).migrate(all)
                try await eventually("the build waits for the producer") {
                    try await db.int("""
                        SELECT count(*)::int FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid()
                          AND query LIKE '%CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'
                        """) == 1
                }
                async let second = Migrator(client: db.client, logger: log.logger()).migrate(all)
                try await eventually("the other host waits for the migration lock") {
                    log.recorded.contains { $0.message == "another migrate holds the migration lock; waiting for it to finish" }
                }
                try await producer.query("COMMIT", logger: db.logger)
                #expect(try await first.map(\.version) == [999])
                #expect(try await second.isEmpty)
            }
            #expect(try await db.int("""
                SELECT count(*)::int FROM pg_index WHERE indexrelid = 'worker.jobs_kind_idx'::regclass AND indisvalid
                """) == 1)
        }
    }

    /// A failed CREATE INDEX CONCURRENTLY leaves its index behind, invalid,
    /// for every insert to maintain; run again, IF NOT EXISTS would skip it.
    /// Migrate drops the one a statement of its file left, and does not
    /// start a file while one is left from before (a migrate killed mid-build).
    @Test func anInvalidIndexLeftByAConcurrentBuildIsDroppedOrStopsTheFileBeforeItStarts() async throws {
        try await withTestDatabase { db in
            let build = "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS jobs_kind_unique ON worker.jobs (kind)"
            let unique = Migration(version: 999, name: "999_unique_kind", sql: """
                \(Migration.noTransactionMarker)
                CREATE TABLE IF NOT EXISTS worker.before_index (id int);
                \(build);
                """)
            _ = try await db.queue.enqueue(NewJob(kind: "twice"), count: 2)
            let migrator = Migrator(client: db.client, logger: db.logger)
            func invalidIndexes() async throws -> Int {
                try await db.int("SELECT count(*)::int FROM pg_index WHERE NOT indisvalid")
            }
            do {
                try await migrator.migrate(migrations + [unique])
                Issue.record("a unique index over duplicates was built")
            } catch let failed as MigrationError {
                guard case .failedOutsideTransaction(999, _, build, let error, let dropped) = failed else { throw failed }
                #expect(error.contains("could not create unique index"), "\(error)")
                #expect(dropped == ["worker.jobs_kind_unique"])
                #expect(failed.description.contains("The statements before this one stay applied; the invalid index it left"))
            }
            #expect(try await invalidIndexes() == 0)
            #expect(try await migrator.currentVersion() == Migrator.requiredVersion)

            // Left by a build that stopped outside migrate: the file does not start.
            try await db.execute("DROP TABLE worker.before_index")
            await #expect(throws: (any Error).self) { try await db.execute("CREATE UNIQUE INDEX CONCURRENTLY jobs_kind_left ON worker.jobs (kind)") }
            #expect(try await invalidIndexes() == 1)
            await #expect(throws: MigrationError.invalidIndexes(version: 999, name: "999_unique_kind", indexes: ["worker.jobs_kind_left"])) {
                try await migrator.migrate(migrations + [unique])
            }
            #expect(try await db.int("SELECT count(*)::int FROM pg_tables WHERE tablename = 'before_index'") == 0, "nothing of it ran")

            try await db.execute("DROP INDEX CONCURRENTLY worker.jobs_kind_left")
            try await db.execute("DELETE FROM worker.jobs")
            #expect(try await migrator.migrate(migrations + [unique]).map(\.version) == [999])
            #expect(try await invalidIndexes() == 0)
        }
    }

    /// `migrate --dry-run` names the files that run outside a transaction,
    /// and exits 1 where migrate would stop at an invalid index.
    @Test func aDryRunNamesAFileOutsideATransactionAndTheInvalidIndexThatWouldStopIt() async throws {
        try await withTestDatabase { db in
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mig-\(UUID())")
            try FileManager.default.copyItem(at: repositorySQLDirectory, to: dir)
            defer { try? FileManager.default.removeItem(at: dir) }
            try "\(Migration.noTransactionMarker)\nCREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_kind_idx ON worker.jobs (kind);\n"
                .write(to: dir.appendingPathComponent("999_kind_index.sql"), atomically: true, encoding: .utf8)
            let plan = try await runTool("workerctl", ["migrate", "--dry-run", "--sql-dir", dir.path], database: db)
            #expect(plan.status == 0 && plan.stdout.contains("999_kind_index runs outside a transaction (-- worker:no-transaction)"), "\(plan)")
            let json = try await runTool("workerctl", ["migrate", "--dry-run", "--json", "--sql-dir", dir.path], database: db)
            let entries = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
            #expect(entries?.last?["in_transaction"] as? Bool == false && entries?.first?["in_transaction"] as? Bool == true, "\(json)")
            _ = try await db.queue.enqueue(NewJob(kind: "twice"), count: 2)
            await #expect(throws: (any Error).self) { try await db.execute("CREATE UNIQUE INDEX CONCURRENTLY jobs_kind_left ON worker.jobs (kind)") }
            let refused = try await runTool("workerctl", ["migrate", "--dry-run", "--sql-dir", dir.path], database: db)
            #expect(refused.status == 1 && refused.stderr.contains("invalid indexes, worker.jobs_kind_left"), "\(refused)")
            #expect(refused.stderr.contains("`workerctl migrate` would stop there"), "\(refused)")
        }
    }

    @Test func aStatementThatCannotRunInATransactionNamesTheMarker() async throws {
        try await withTestDatabase { db in
            let index = Migration(version: 999, name: "999_kind_index", sql: "CREATE INDEX CONCURRENTLY jobs_kind_idx ON worker.jobs (kind);")
            do {
                try await Migrator(client: db.client, logger: db.logger).migrate(migrations + [index])
                Issue.record("the migration succeeded")
            } catch let MigrationError.failed(version, _, _, error) {
                #expect(version == 999)
                #expect(error.contains("put the line '-- worker:no-transaction' at the top of the file"), "\(error)")
            }
        }
    }

    @Test func workerdRequiresTheSchema() async throws {
        try await withEmptyTestDatabase { db in
            await #expect(throws: PostgresWorkerError.self) {
                try await Migrator(client: db.client, logger: db.logger).checkSchema()
            }
        }
    }

    /// A plan node turned off is costed 10^10, enough for JIT compilation on
    /// every call should that node be the only plan left (see sql/011).
    @Test func functionsThatTurnPlanNodesOffTurnJITOffToo() async throws {
        try await withTestDatabase { db in
            let tuned = """
                FROM pg_proc WHERE pronamespace IN ('worker'::regnamespace, 'app'::regnamespace)
                AND array_to_string(proconfig, ',') LIKE '%enable_%'
                """
            #expect(try await db.int("SELECT count(*)::int \(unescaped: tuned)") == 6)
            let compiled = try await db.string(
                "SELECT coalesce(string_agg(proname, ', '), 'none') \(unescaped: tuned) AND NOT 'jit=off' = ANY(proconfig)")
            #expect(compiled == "none")
        }
    }

    /// ANALYZE skips the payloads and unique keys (sql/012) and still
    /// gathers what the claim is planned with.
    @Test func analyzeSkipsColumnsNoPlanDependsOn() async throws {
        try await withTestDatabase { db in
            try await db.execute("""
                INSERT INTO worker.jobs (kind, payload, idempotency_key)
                SELECT 'noop', jsonb_build_object('n', n), 'key-' || n FROM generate_series(1, 500) AS n
                """)
            try await db.execute("ANALYZE worker.jobs")
            let gathered = try await db.string("""
                SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_stats
                WHERE schemaname = 'worker' AND tablename = 'jobs'
                  AND attname IN ('queue', 'visible_at', 'payload', 'idempotency_key')
                """)
            #expect(gathered == "queue,visible_at")
        }
    }

    @Test func theRequiredVersionIsTheNewestFile() {
        #expect(migrations.last?.version == Migrator.requiredVersion)
    }

    @Test func theSplitterKeepsFunctionBodiesQuotesAndCommentsWhole() {
        let sql = """
            -- a comment; with a semicolon
            CREATE TABLE t (a text DEFAULT 'x;y''z');
            /* block; comment */
            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;
            SELECT $1, "we;ird", $$a;b$$
            """
        let statements = SQLScript.statements(in: sql)
        #expect(statements.count == 3)
        #expect(statements[0].hasSuffix("DEFAULT 'x;y''z')"))
        #expect(statements[1].contains("BEGIN RETURN 1; END $body$"))
        #expect(statements[2] == #"SELECT $1, "we;ird", $$a;b$$"#)
        // PostgreSQL ends a -- comment at a CR too: a file with CR line ends is not one long comment.
        #expect(SQLScript.statements(in: "-- a comment\rCREATE TABLE t (a int);\rSELECT 1") == ["-- a comment\rCREATE TABLE t (a int)", "SELECT 1"])
    }

    @Test func theNoTransactionMarkerIsALeadingCommentLineAndALineLikeItElsewhereIsRefused() throws {
        func runsInTransaction(_ sql: String) -> Bool { Migration(version: 1, name: "1_x", sql: sql).runsInTransaction }
        #expect(runsInTransaction("CREATE INDEX CONCURRENTLY i ON t (a);"))
        #expect(!runsInTransaction("-- worker:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);"))
        #expect(!runsInTransaction("-- An index.\r\n\r\n--  Worker:No-Transaction \r\nCREATE INDEX CONCURRENTLY i ON t (a);\r\n"), "CRLF, case, spaces")
        #expect(!runsInTransaction("\u{FEFF}-- worker:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);"), "a byte order mark")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mig-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for misplaced in ["SELECT 1;\n-- worker:no-transaction\n", "/* worker:no-transaction */\nSELECT 1;",
                          "-- worker:no-transaction please\nSELECT 1;", "-- worker:no-transaction\nSELECT 1; -- worker:no-transaction",
                          "/* header */\n-- worker:no-transaction\nSELECT 1;"] {
            try misplaced.write(to: dir.appendingPathComponent("001_a.sql"), atomically: true, encoding: .utf8)
            #expect(throws: MigrationError.misplacedMarker("001_a.sql"), "\(misplaced)") { try Migration.load(from: dir) }
        }
    }

    @Test func badlyNamedOrDuplicateFilesAreErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mig-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "SELECT 1".write(to: dir.appendingPathComponent("001_a.sql"), atomically: true, encoding: .utf8)
        try "SELECT 1".write(to: dir.appendingPathComponent("001_b.sql"), atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.duplicateVersion(1)) { try Migration.load(from: dir) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("001_b.sql"))
        try "SELECT 1".write(to: dir.appendingPathComponent("two.sql"), atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.badFileName("two.sql")) { try Migration.load(from: dir) }
    }
}

/// Tables, columns, indexes, functions and triggers of the worker schema, as text.
func schemaFingerprint(_ db: TestDatabase) async throws -> String {
    let rows = try await db.client.query(
        """
        SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
            SELECT table_name || '.' || column_name || ':' || data_type || ':' || coalesce(column_default, '') AS x
            FROM information_schema.columns WHERE table_schema = 'worker'
            UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'worker'
            UNION ALL SELECT p.proname || ':' || md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'worker'
            UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal
        ) s
        """, logger: db.logger)
    for try await text in rows.decode(String.self) { return text }
    return ""
}
