import Foundation
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `workerctl limits set --max-per-second` (sql/022): at most R jobs of a
/// queue claimed a second, in bursts of up to B, fleet-wide.
@Suite(.timeLimit(.minutes(2))) struct QueueRateLimitTests {
    func tokens(_ db: TestDatabase) async throws -> Double? {
        try await QueueLimits(client: db.client, logger: db.logger).list().first { $0.queue == "limited" }?.tokens
    }

    /// The bucket's clock turned back, as if `seconds` had passed since its last claim.
    func wait(_ seconds: Int, _ db: TestDatabase) async throws {
        try await db.execute("UPDATE worker.queue_limits SET tokens_at = tokens_at - \(seconds) * interval '1 second'")
    }

    @Test func aClaimTakesTheBucketsWholeTokensAndTheBucketRefillsUpToItsBurst() async throws {
        try await withTestDatabase { db in
            let limits = QueueLimits(client: db.client, logger: db.logger)
            // One token per 10,000 seconds: none comes back while the test runs.
            try await limits.set("limited", rate: .init(perSecond: 0.0001, burst: 5))
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 14)
            _ = try await db.queue.enqueue(NewJob(queue: "free", kind: "test"), count: 10)

            #expect(try await claim(db).count == 5, "a full bucket")
            #expect(try await claim(db).isEmpty, "an empty one")
            #expect(try await claim(db, "free").count == 10, "other queues are not limited")
            try await wait(25_000, db)
            #expect(try await claim(db).count == 2, "2.5 tokens came back: the whole ones are spent")
            #expect(try await tokens(db).map { abs($0 - 0.5) < 0.01 } == true, "half a token is kept")
            try await wait(100_000, db)
            #expect(try await claim(db).count == 5, "no more than the burst, however long the queue was quiet")

            // A claim that finds fewer jobs than tokens spends what it took.
            try await wait(100_000, db)
            #expect(try await claim(db).count == 2)
            #expect(try await tokens(db).map { abs($0 - 3) < 0.01 } == true)

            // With a limit on jobs in flight too, the smaller of the two holds
            // (the jobs leased before it count from their next claim).
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 10)
            let both = try await limits.set("limited", maxInFlight: 4)
            #expect(both.maxPerSecond == 0.0001 && both.burst == 5 && both.inFlight == 0, "the rate kept: \(both)")
            #expect(try await claim(db).count == 3, "the rate's three tokens, four slots free")
            let again = try await limits.set("limited", rate: .init(perSecond: 0.0001))
            #expect(again.burst == 5 && again.maxInFlight == 4, "\(again)")
            #expect(try await claim(db).isEmpty, "a rate set again keeps its bucket's level: no burst granted")
            try await wait(100_000, db)
            #expect(try await claim(db).count == 1, "one slot is left")
            #expect(try await limits.remove("limited", .maxInFlight))
            #expect(try await claim(db).count == 4, "the rate alone: the bucket's other four")
            #expect(try await limits.remove("limited", .rate))
            #expect(try await !limits.remove("limited"), "the last limit removed took the queue's row")
            #expect(try await claim(db).count == 2, "the rest, unlimited")
        }
    }

    @Test func aBurstLeftOutFollowsTheRateAndOneGivenStays() async throws {
        try await withTestDatabase { db in
            let limits = QueueLimits(client: db.client, logger: db.logger)
            #expect(try await limits.set("q", rate: .init(perSecond: 2)).burst == 2, "a second's worth")
            #expect(try await limits.set("q", rate: .init(perSecond: 1000)).burst == 1000, "which follows the rate")
            #expect(try await limits.set("q", rate: .init(perSecond: 0.5)).burst == 1, "at least one")
            #expect(try await limits.set("q", rate: .init(perSecond: 20, burst: 50)).burst == 50)
            #expect(try await limits.set("q", rate: .init(perSecond: 30)).burst == 50, "a burst given stays")
            let lowered = try await limits.set("q", rate: .init(perSecond: 30, burst: 3))
            #expect(lowered.burst == 3 && lowered.tokens.map { $0 <= 3 } == true, "the bucket no fuller than the new burst: \(lowered)")
        }
    }

    /// An operator's transaction holding the bucket's row makes a claim give
    /// up after a second, as sql/021's lock does, not wait for it with the
    /// queue's lock held (every other claim of the queue would give up).
    @Test func aClaimWaitsForTheBucketsRowASecondAtMost() async throws {
        try await withTestDatabase { db in
            try await QueueLimits(client: db.client, logger: db.logger).set("limited", rate: .init(perSecond: 100))
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 2)
            try await db.client.withConnection { holder in
                try await holder.query("BEGIN", logger: db.logger)
                try await holder.query("UPDATE worker.queue_limits SET set_by = 'ops'", logger: db.logger)
                let clock = ContinuousClock(), start = clock.now
                #expect(try await claim(db).isEmpty)
                let waited = clock.now - start
                #expect(waited >= .milliseconds(950) && waited < .seconds(60), "the claim waited \(waited), not about a second")
                try await holder.query("COMMIT", logger: db.logger)
            }
            #expect(try await claim(db).count == 2)
        }
    }

    /// The token bucket's promise over every stretch of time: from the first
    /// claim to the last of any window, no more than the burst plus the rate
    /// times its length. Recorded by the database's clock, as the claims count.
    @Test func aFleetNeverClaimsFasterThanTheRate() async throws {
        let (workers, lanes, jobs) = (3, 2, 40)
        let (rate, burst) = (20.0, 4)
        try await withTestDatabase(connections: workers * WorkerConfiguration(concurrency: lanes).connectionsNeeded) { db in
            try await db.execute("CREATE TABLE public.claims (id bigint, leased_at timestamptz)")
            try await db.execute("""
                CREATE FUNCTION public.record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.claims VALUES (NEW.id, NEW.leased_at); RETURN NULL; END $$
                """)
            try await db.execute("""
                CREATE TRIGGER record_claim AFTER UPDATE OF lease_token ON worker.jobs
                FOR EACH ROW WHEN (NEW.lease_token IS NOT NULL) EXECUTE FUNCTION public.record_claim()
                """)
            try await QueueLimits(client: db.client, logger: db.logger).set("limited", rate: .init(perSecond: rate, burst: burst))
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: jobs)
            let handler = RecordingHandler()
            func configuration(_ n: Int) -> WorkerConfiguration {
                WorkerConfiguration(queues: ["limited"], concurrency: lanes, pollInterval: .milliseconds(100), workerID: "w\(n)")
            }
            try await withWorker(db, .testing(handler), configuration(1)) { _ in
                try await withWorker(db, .testing(handler), configuration(2)) { _ in
                    try await withWorker(db, .testing(handler), configuration(3)) { _ in
                        try await eventually("the queue to drain") { try await db.jobCount() == 0 }
                    }
                }
            }
            #expect(handler.invocations.count == jobs)
            #expect(try await db.int("SELECT count(*)::int FROM public.claims") == jobs)
            let overRate = try await db.int("""
                WITH c AS (SELECT leased_at, row_number() OVER (ORDER BY leased_at) AS n FROM public.claims)
                SELECT count(*)::int FROM c AS first JOIN c AS last ON last.n >= first.n
                WHERE last.n - first.n + 1 > \(burst) + \(rate) * extract(epoch FROM last.leased_at - first.leased_at) + 1e-6
                """)
            #expect(overRate == 0, "windows with more claims than the bucket allows")
        }
    }

    @Test func workerctlSetsChangesListsAndRemovesARateAndRefusesABadOne() async throws {
        try await withTestDatabase { db in
            func run(_ arguments: String...) async throws -> ToolResult { try await runTool("workerctl", arguments, database: db) }
            for (arguments, message) in [
                (["--max-per-second", "0"], "--max-per-second must be more than 0 and at most 1000000, not 0 (to stop a queue, workerctl pause)"),
                (["--max-per-second", "2000000"], "--max-per-second must be more than 0 and at most 1000000, not 2000000"),
                (["--max-per-second", "nan"], "--max-per-second must be more than 0 and at most 1000000, not nan"),
                (["--max-per-second", "5", "--burst", "0"], "--burst must be in 1...2147483647, not 0"),
                (["--burst", "5"], "--burst needs --max-per-second"),
                ([], "give --max-in-flight, --max-per-second or both"),
            ] {
                let refused = try await runTool("workerctl", ["limits", "set", "billing"] + arguments, database: db)
                #expect(refused.status == 64 && refused.stderr.contains(message), "\(arguments): \(refused)")
            }
            #expect(try await db.int("SELECT count(*)::int FROM worker.queue_limits") == 0)

            let rate = try await run("limits", "set", "billing", "--max-per-second", "0.5")
            #expect(rate.status == 0 && rate.stdout.contains("limited to 0.5 jobs a second (bursts of 1)"), "\(rate)")
            let both = try await run("limits", "set", "billing", "--max-in-flight", "4")
            #expect(both.status == 0 && both.stdout.contains("limited to 4 jobs in flight"), "\(both)")
            let stats = try await run("stats", "--queue", "billing")
            #expect(stats.stdout.split(separator: "\n").first { $0.hasPrefix("billing") }?.hasSuffix("active,limit=4,rate=0.5/s") == true,
                    "the rate kept beside the new limit: \(stats)")
            let table = try await run("limits", "list")
            let row = table.stdout.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true).prefix(6)
            #expect(row.map(Array.init) == ["billing", "4", "0", "0.5", "1", "1.0"], "\(table)")
            let rateOnly = try await run("limits", "set", "mail", "--max-per-second", "2", "--burst", "7")
            #expect(rateOnly.stdout.contains("limited to 2 jobs a second (bursts of 7)"), "\(rateOnly)")
            let rateChanged = try await run("limits", "set", "mail", "--max-per-second", "3")
            #expect(rateChanged.stdout.contains("limited to 3 jobs a second (bursts of 7)"), "the burst kept: \(rateChanged)")
            let mail = try await run("limits", "list")
            let mailRow = mail.stdout.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true).prefix(5)
            #expect(mailRow.map(Array.init) == ["mail", "-", "-", "3", "7"], "no in-flight count without its limit: \(mail)")
            let json = try await run("limits", "list", "--json")
            let listed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
            #expect(listed?.first?["max_per_second"] as? Double == 0.5 && listed?.first?["burst"] as? Int == 1, "\(json)")

            let removed = try await run("limits", "remove", "billing", "--max-per-second")
            #expect(removed.status == 0 && removed.stdout.contains("removed the rate limit of queue 'billing'"), "\(removed)")
            let again = try await run("limits", "remove", "billing", "--max-per-second")
            #expect(again.status == 1 && again.stderr.contains("queue 'billing' has no rate limit"), "\(again)")
            let rateless = try await run("limits", "list", "--json")
            let kept = try JSONSerialization.jsonObject(with: Data(rateless.stdout.utf8)) as? [[String: Any]]
            #expect(kept?.first?["max_in_flight"] as? Int == 4 && kept?.first?["max_per_second"] == nil, "\(rateless)")
        }
    }
}
