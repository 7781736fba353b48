import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct RedriveTests {
    /// Dead-letters one job per (queue, kind, reason) given, through the real processing path.
    func deadLetter(_ db: TestDatabase, _ jobs: [(queue: String, kind: String, error: JobError)]) async throws -> [Int64] {
        var ids: [Int64] = []
        for job in jobs {
            let id = try await db.queue.enqueue(NewJob(queue: job.queue, kind: job.kind, payload: #"{"n":"\#(ids.count)"}"#, maxAttempts: 1))
            let claimed = try await db.queue.claim(queue: job.queue, limit: 1, visibilityTimeout: .seconds(30), workerID: "w")
            let handler = RecordingHandler { _, _ in throw job.error }
            var registry = HandlerRegistry.testing(handler)
            registry.register(job.kind, handler)
            _ = try await BatchProcessor(client: db.client, handlers: registry, workerID: "w", logger: db.logger).process(claimed)
            ids.append(id)
        }
        #expect(try await db.deadCount() == jobs.count)
        return ids
    }

    /// mail/send (max_attempts), mail/bounce (non_retryable), billing/send (invalid_event).
    func threeDeadLetters(_ db: TestDatabase) async throws -> [Int64] {
        try await deadLetter(db, [
            ("mail", "send", .retryable("smtp down")),
            ("mail", "bounce", .nonRetryable("bad address")),
            ("billing", "send", .invalidEvent("no amount")),
        ])
    }

    /// Dead letters made directly in queue `default`: for tests about the move, not how they died.
    func insertDeadLetters(_ db: TestDatabase, count: Int) async throws {
        try await db.execute(
            """
            INSERT INTO worker.dead_letters (id, queue, kind, payload, priority, attempts, created_at, redrive_count, reason, errors)
            SELECT g, 'default', 'test', '{}', 0, 3, now(), 0, 'max_attempts', '[]' FROM generate_series(1, \(count)) AS g
            """)
    }

    @Test func redrivePutsAJobBackOnceWithAttemptsResetAndTheRedriveCountKept() async throws {
        try await withTestDatabase { db in
            let ids = try await deadLetter(db, [("default", "test", .retryable("down"))])
            let moved = try await db.deadLetters.redrive(DeadLetterFilter(ids: ids), limit: 10)
            #expect(moved == [RedrivenJob(id: ids[0], queue: "default", kind: "test", reason: "max_attempts", redriveCount: 1)])
            #expect(try await db.deadCount() == 0)
            #expect(try await db.deadLetters.redrive(DeadLetterFilter(ids: ids), limit: 10).isEmpty)
            let job = try #require(try await db.queue.claim(queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w").first)
            #expect(job.id == ids[0] && job.attempts == 1 && job.redriveCount == 1 && job.payload == #"{"n": "0"}"#)
            // Dead again: the count survives the round trip and grows on the next redrive.
            _ = try await BatchProcessor(client: db.client, handlers: .testing(RecordingHandler { _, _ in throw JobError.nonRetryable("no") }), workerID: "w", logger: db.logger).process([job])
            #expect(try await db.deadLetters.show(id: ids[0])?.redriveCount == 1)
            // Both deaths are in the history: the first one's reason with when it was redriven.
            #expect(try await db.int("""
                SELECT count(*)::int FROM worker.dead_letters, jsonb_array_elements(errors) AS e
                WHERE id = \(ids[0]) AND e->>'dead_lettered' = 'max_attempts' AND e->>'worker' = 'w'
                  AND e ? 'redriven_at' AND (e->>'attempt')::int = 1
                """) == 1)
            #expect(try await db.int("SELECT jsonb_array_length(errors)::int FROM worker.dead_letters WHERE id = \(ids[0])") == 3)
            #expect(try await db.deadLetters.redrive(DeadLetterFilter(ids: ids), limit: 10).first?.redriveCount == 2)
        }
    }

    @Test func concurrentRedrivesMoveEachJobExactlyOnce() async throws {
        try await withTestDatabase { db in
            try await insertDeadLetters(db, count: 3000)
            let moved = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        var mine: [Int64] = []
                        while true {
                            let batch = try await db.deadLetters.redrive(DeadLetterFilter(queue: "default"), limit: 100)
                            if batch.isEmpty { return mine }
                            mine += batch.map(\.id)
                        }
                    }
                }
                return try await group.reduce(into: [Int64]()) { $0 += $1 }
            }
            #expect(moved.count == 3000 && Set(moved).count == 3000)
            #expect(try await db.jobCount() == 3000)
            #expect(try await db.deadCount() == 0)
        }
    }

    @Test func filtersSelectByQueueKindReasonIdAndTime() async throws {
        try await withTestDatabase { db in
            let ids = try await threeDeadLetters(db)
            func redrive(_ filter: DeadLetterFilter) async throws -> [Int64] {
                try await db.deadLetters.redrive(filter, limit: 100, dryRun: true).map(\.id)
            }
            #expect(try await redrive(DeadLetterFilter(queue: "mail")) == [ids[0], ids[1]])
            #expect(try await redrive(DeadLetterFilter(kind: "send")) == [ids[0], ids[2]])
            #expect(try await redrive(DeadLetterFilter(reason: "invalid_event")) == [ids[2]])
            #expect(try await redrive(DeadLetterFilter(queue: "mail", kind: "send")) == [ids[0]])
            #expect(try await redrive(DeadLetterFilter(ids: [ids[1], 999_999])) == [ids[1]])
            #expect(try await redrive(DeadLetterFilter(since: Date().addingTimeInterval(-3600))).count == 3)
            #expect(try await redrive(DeadLetterFilter(until: Date().addingTimeInterval(-3600))).isEmpty)
            // Values that look like SQL are only values.
            #expect(try await redrive(DeadLetterFilter(queue: "mail' OR '1'='1")).isEmpty)
            // The dry runs changed nothing.
            let (dead, jobs) = (try await db.deadCount(), try await db.jobCount())
            #expect(dead == 3 && jobs == 0)
        }
    }

    @Test func aPurgeDeletesWhatItsFilterMatchesAndADryRunOnlyCounts() async throws {
        try await withTestDatabase { db in
            let ids = try await threeDeadLetters(db)
            #expect(try await db.deadLetters.purge(DeadLetterFilter(queue: "mail"), limit: 100, dryRun: true) == 2)
            #expect(try await db.deadLetters.purge(DeadLetterFilter(queue: "mail' OR '1'='1"), limit: 100) == 0)
            #expect(try await db.deadLetters.purge(DeadLetterFilter(until: Date().addingTimeInterval(-3600)), limit: 100) == 0)
            #expect(try await db.deadCount() == 3)
            #expect(try await db.deadLetters.purge(DeadLetterFilter(kind: "send"), limit: 1) == 1)
            #expect(try await db.deadLetters.list(DeadLetterFilter(), limit: 10).map(\.id).sorted() == [ids[1], ids[2]])
            #expect(try await db.deadLetters.purge(DeadLetterFilter(reason: "max_attempts"), limit: 100) == 0)
            #expect(try await db.deadLetters.purge(DeadLetterFilter(ids: [ids[1], ids[2]]), limit: 100) == 2)
            let (dead, jobs) = (try await db.deadCount(), try await db.jobCount())
            #expect(dead == 0 && jobs == 0)
        }
    }

    @Test func aDeadLetterIsEitherRedrivenOrPurgedNeverBoth() async throws {
        try await withTestDatabase { db in
            try await insertDeadLetters(db, count: 3000)
            let filter = DeadLetterFilter(queue: "default")
            async let redriven: Int = {
                var moved = 0
                while true {
                    let batch = try await db.deadLetters.redrive(filter, limit: 100).count
                    if batch == 0 { return moved }
                    moved += batch
                }
            }()
            async let purged: Int = {
                var gone = 0
                while true {
                    let batch = try await db.deadLetters.purge(filter, limit: 100)
                    if batch == 0 { return gone }
                    gone += batch
                }
            }()
            let (moved, gone) = try await (redriven, purged)
            #expect(moved + gone == 3000)
            #expect(try await db.jobCount() == moved)
            #expect(try await db.deadCount() == 0)
        }
    }

    /// A job redriven and dead again, or any letter that arrives while a
    /// paced redrive runs, is left for the next command: no loop of its own making.
    @Test func aRedriveMovesOnlyTheDeadLettersThereWhenItStarted() async throws {
        try await withTestDatabase { db in
            try await insertDeadLetters(db, count: 3)
            let redrive = try ToolProcess("workerctl", ["redrive", "--all", "--rate", "2"], environment: ["DATABASE_URL": db.url])
            try await eventually("the first letter moved") { try await db.jobCount() >= 1 }
            try await db.execute(
                """
                INSERT INTO worker.dead_letters (id, queue, kind, payload, priority, attempts, created_at, redrive_count, reason, errors)
                VALUES (1000, 'default', 'test', '{}', 0, 3, now(), 0, 'max_attempts', '[]')
                """)
            let result = await redrive.result()
            #expect(result.status == 0 && result.stdout.contains("redrove 3 jobs"), "\(result)")
            #expect(try await db.int("SELECT id::int FROM worker.dead_letters") == 1000)
        }
    }

    @Test func theLimitCapsHowManyMove() async throws {
        try await withTestDatabase { db in
            _ = try await deadLetter(db, [("q", "k", .nonRetryable("x")), ("q", "k", .nonRetryable("y")), ("q", "k", .nonRetryable("z"))])
            #expect(try await db.deadLetters.redrive(DeadLetterFilter(queue: "q"), limit: 2).count == 2)
            let (dead, jobs) = (try await db.deadCount(), try await db.jobCount())
            #expect(dead == 1 && jobs == 2)
        }
    }

    @Test func listingShowsNewestFirstWithTheErrorHistory() async throws {
        try await withTestDatabase { db in
            let ids = try await deadLetter(db, [("q", "a", .retryable("first")), ("q", "b", .nonRetryable("second"))])
            let letters = try await db.deadLetters.list(DeadLetterFilter(), limit: 10)
            #expect(letters.map(\.id) == [ids[1], ids[0]])
            let letter = try #require(try await db.deadLetters.show(id: ids[0]))
            #expect(letter.reason == "max_attempts" && letter.lastError == "first" && letter.failedBy == "w")
            #expect(letter.errors.contains("\"error\": \"first\""))
            #expect(try await db.deadLetters.show(id: 424242) == nil)
        }
    }
}
