import Foundation
import PostgresNIO
import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `workerctl limits` (sql/021): at most N jobs of a queue in flight, fleet-wide.
@Suite(.timeLimit(.minutes(2))) struct QueueLimitTests {
    @Test func aClaimTakesWhatTheLimitLeavesAndAFreedSlotWakesTheQueue() async throws {
        try await withTestDatabase { db in
            let limits = QueueLimits(client: db.client, logger: db.logger)
            try await limits.set("limited", maxInFlight: 3)
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 10)
            _ = try await db.queue.enqueue(NewJob(queue: "free", kind: "test"), count: 10)

            let first = try await claim(db)
            #expect(first.count == 3)
            #expect(try await claim(db).isEmpty, "every slot is taken")
            #expect(try await claim(db, "free").count == 10, "other queues are not limited")
            #expect(try await limits.list().map { "\($0.queue) \($0.inFlight ?? 0)/\($0.maxInFlight ?? 0)" } == ["limited 3/3"])

            // An ack frees a slot and wakes the queue's workers: their lanes wait for a poll after a short claim.
            let processor = BatchProcessor(client: db.client, handlers: .testing(RecordingHandler()), workerID: "w", logger: db.logger)
            let woken = try await db.client.withConnection { listener in
                try await listener.listen(on: "worker_jobs") { notifications in
                    _ = try await processor.process([first[0]])
                    for try await notification in notifications { return notification.payload }
                    return ""
                }
            }
            #expect(woken == "limited")
            #expect(try await claim(db).count == 1)

            // An expired lease holds no slot.
            try await db.execute("UPDATE worker.jobs SET visible_at = now() - interval '1 millisecond' WHERE id = \(first[1].id)")
            #expect(try await claim(db).count == 1)
            try await limits.set("limited", maxInFlight: 5)
            #expect(try await claim(db).count == 2)
            #expect(try await limits.remove("limited"))
            #expect(try await claim(db).count == 3, "the last three ready, up to the expired lease claimed alone")
            #expect(try await !limits.remove("limited"))
        }
    }

    /// A stalled worker's expired lease gave its slot away: its heartbeat must
    /// not make it live again beside the job that took the slot.
    @Test func anExpiredLeaseUnderALimitIsNotRevivedByItsHeartbeat() async throws {
        try await withTestDatabase { db in
            try await QueueLimits(client: db.client, logger: db.logger).set("limited", maxInFlight: 1)
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 2)
            _ = try await db.queue.enqueue(NewJob(queue: "free", kind: "test"))
            let stalled = try await claim(db), free = try await claim(db, "free")
            try await db.execute("UPDATE worker.jobs SET visible_at = now() - interval '1 millisecond' WHERE lease_token IS NOT NULL")
            let next = try await claim(db)
            #expect(next.count == 1 && next.first?.id != stalled.first?.id, "the other job, in the expired lease's slot")
            let beat = try await db.queue.beat(extending: (stalled + free).map(\.lease), visibilityTimeout: .seconds(60), checking: [])
            #expect(beat.extended == Set(free.map(\.lease)), "a lease without a limit is extended as before")
            #expect(try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE queue = 'limited' AND lease_token IS NOT NULL AND visible_at > now()") == 1)
        }
    }

    /// A claim stuck while it holds the queue's lock makes the others give up
    /// after a second, not wait behind it.
    @Test func aClaimWaitsForTheQueuesLockASecondAtMost() async throws {
        try await withTestDatabase { db in
            try await QueueLimits(client: db.client, logger: db.logger).set("limited", maxInFlight: 5)
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 2)
            try await db.client.withConnection { holder in
                try await holder.query("BEGIN", logger: db.logger)
                try await holder.query("SELECT pg_advisory_xact_lock(1818848617, hashtext('limited'))", logger: db.logger).drain()
                #expect(try await claim(db).isEmpty)
                try await holder.query("COMMIT", logger: db.logger)
            }
            #expect(try await claim(db).count == 2)
        }
    }

    @Test func aFleetNeverRunsMoreJobsOfALimitedQueueAtOnce() async throws {
        let workers = 3, lanes = 4
        try await withTestDatabase(connections: workers * WorkerConfiguration(concurrency: lanes).connectionsNeeded) { db in
            try await QueueLimits(client: db.client, logger: db.logger).set("limited", maxInFlight: 2)
            _ = try await db.queue.enqueue(NewJob(queue: "limited", kind: "test"), count: 30)
            let running = Running()
            let handler = RecordingHandler { _, _ in
                running.started()
                // Until a second job runs beside it (the limit allows two), however
                // slowly a loaded machine starts one; then the job's work.
                let deadline = ContinuousClock.now + .seconds(10)
                while running.most < 2 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
                try? await Task.sleep(for: .milliseconds(20))
                running.ended()
            }
            func configuration(_ n: Int) -> WorkerConfiguration {
                WorkerConfiguration(queues: ["limited"], concurrency: lanes, batchSize: 1, pollInterval: .milliseconds(50), workerID: "w\(n)")
            }
            try await withWorker(db, .testing(handler), configuration(1)) { _ in
                try await withWorker(db, .testing(handler), configuration(2)) { _ in
                    try await withWorker(db, .testing(handler), configuration(3)) { _ in
                        try await eventually("the queue to drain") { try await db.jobCount() == 0 }
                    }
                }
            }
            #expect(handler.invocations.count == 30)
            #expect(running.most == 2, "never more than the limit, and the limit reached")
        }
    }

    @Test func workerctlSetsListsAndRemovesLimitsAndRefusesANonPositiveOne() async throws {
        try await withTestDatabase { db in
            let zero = try await runTool("workerctl", ["limits", "set", "billing", "--max-in-flight", "0"], database: db)
            #expect(zero.status != 0 && zero.stderr.contains("--max-in-flight must be in 1...2147483647, not 0"), "\(zero)")
            let set = try await runTool("workerctl", ["limits", "set", "billing", "--max-in-flight", "4"], database: db)
            #expect(set.status == 0 && set.stdout.contains("limited to 4"), "\(set)")
            #expect(set.stdout.contains("note: queue 'billing' has no jobs"), "\(set)")
            let stats = try await runTool("workerctl", ["stats", "--queue", "billing"], database: db)
            #expect(stats.stdout.split(separator: "\n").first { $0.hasPrefix("billing") }?.hasSuffix("active,limit=4") == true, "\(stats)")
            let table = try await runTool("workerctl", ["limits", "list"], database: db)
            let row = table.stdout.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true).prefix(3)
            #expect(row.map(Array.init) == ["billing", "4", "0"], "\(table)")
            let json = try await runTool("workerctl", ["limits", "list", "--json"], database: db)
            let listed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
            #expect(listed?.first?["max_in_flight"] as? Int == 4 && listed?.first?["in_flight"] as? Int == 0, "\(json)")
            #expect(try await runTool("workerctl", ["limits", "remove", "billing"], database: db).status == 0)
            let again = try await runTool("workerctl", ["limits", "remove", "billing"], database: db)
            #expect(again.status == 1 && again.stderr.contains("queue 'billing' has no limit"), "\(again)")
        }
    }
}

/// A claim of up to 50 jobs of `queue`, as a lane makes it: what the limits
/// of sql/021 and sql/022 bound (QueueLimitTests, QueueRateLimitTests).
func claim(_ db: TestDatabase, _ queue: String = "limited") async throws -> [Job] {
    try await db.queue.claim(queue: queue, limit: 50, visibilityTimeout: .seconds(60), workerID: "w")
}

/// How many handlers run at once, and the most that ever did.
final class Running: Sendable {
    private let state = Mutex((now: 0, most: 0))
    func started() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
    func ended() { state.withLock { $0.now -= 1 } }
    var most: Int { state.withLock { $0.most } }
}
