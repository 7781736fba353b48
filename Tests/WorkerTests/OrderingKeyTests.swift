import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// Ordering keys (sql/019): jobs of a queue with one key run one at a time, in id order.
@Suite(.timeLimit(.minutes(2))) struct OrderingKeyTests {
    /// Starts and ends of handler calls, in the order they happened.
    final class Timeline: Sendable {
        private let events = Mutex<[(id: Int64, start: Bool)]>([])
        func record(_ id: Int64, start: Bool) { events.withLock { $0.append((id, start)) } }
        var all: [(id: Int64, start: Bool)] { events.withLock { $0 } }
    }

    func enqueue(_ db: TestDatabase, keys: [String], each: Int) async throws -> [String: [Int64]] {
        var ids: [String: [Int64]] = [:]
        for _ in 0..<each {
            for key in keys { ids[key, default: []].append(try await db.queue.enqueue(NewJob(kind: "test", orderingKey: key))) }
        }
        return ids
    }

    func state(_ db: TestDatabase, _ id: Int64) async throws -> String {
        try await db.string("SELECT CASE WHEN parked_visible_at IS NOT NULL THEN 'blocked' ELSE 'head' END FROM worker.jobs WHERE id = \(id)")
    }

    @Test func jobsOfAKeyRunOneAtATimeInOrderAcrossAFleet() async throws {
        try await withTestDatabase { db in
            let ids = try await enqueue(db, keys: ["a", "b", "c"], each: 10)
            _ = try await db.queue.enqueue(NewJob(kind: "test"), count: 10)  // no key: not held back
            // One head per key; the others wait, out of the claim's way.
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE parked_visible_at IS NOT NULL") == 27)
            for key in ["a", "b", "c"] { #expect(try await state(db, ids[key]![0]) == "head") }
            let stats = try #require(try await QueueStats.read(client: db.client, logger: db.logger).first)
            #expect(stats.ready == 13 && stats.blocked == 27 && stats.delayed == 0, "\(stats)")

            let timeline = Timeline()
            let handler = RecordingHandler { job, _ in
                timeline.record(job.id, start: true)
                try await Task.sleep(for: .milliseconds(5))  // the work, so that overlaps could happen
                timeline.record(job.id, start: false)
            }
            let workers = (0..<3).map { n in
                Worker(client: db.client, configuration: WorkerConfiguration(
                    concurrency: 4, batchSize: 5, pollInterval: .milliseconds(50), workerID: "w\(n)"),
                    handlers: .testing(handler), logger: db.logger)
            }
            try await runUntilDrained(workers, db, "every job done")

            let events = timeline.all
            for (key, keyed) in ids {
                let mine = events.filter { keyed.contains($0.id) }
                // Start, end, start, end, ... in id order: never two at once, never out of turn.
                let expected = keyed.flatMap { [($0, true), ($0, false)] }
                #expect(mine.map(\.id) == expected.map(\.0) && mine.map(\.start) == expected.map(\.1), "key \(key): \(mine)")
            }
            #expect(handler.invocations.count == 40)
            #expect(try await db.int("SELECT count(*)::int FROM worker.ordering_wakeups") == 0)
        }
    }

    @Test func aRetryingHeadHoldsItsKeyAndADeadLetteredOneHandsOver() async throws {
        try await withTestDatabase { db in
            let ids = try await enqueue(db, keys: ["retried", "doomed"], each: 3)
            let (retried, doomed) = (ids["retried"]!, ids["doomed"]!)
            let timeline = Timeline()
            let handler = RecordingHandler { job, _ in
                timeline.record(job.id, start: true)
                if job.id == doomed[0] || (job.id == retried[0] && job.attempts < 3) { throw TestFailure() }
            }
            let configuration = WorkerConfiguration(concurrency: 4, batchSize: 1, pollInterval: .milliseconds(20), workerID: "w")
            try await withWorker(db, .testing(handler), configuration) { _ in
                try await eventually("the queue to drain") { try await db.jobCount() == 0 }
            }
            let starts = timeline.all.map(\.id)
            #expect(starts.filter { retried.contains($0) } == [retried[0], retried[0], retried[0], retried[1], retried[2]])
            #expect(starts.filter { doomed.contains($0) } == [doomed[0], doomed[0], doomed[0], doomed[1], doomed[2]])
            #expect(try await db.int("SELECT count(*)::int FROM worker.dead_letters WHERE ordering_key = 'doomed'") == 1)

            // Redriven, it runs again, as its key's head again.
            let redriven = try await DeadLetterQueue(client: db.client, logger: db.logger)
                .redrive(DeadLetterFilter(ids: [doomed[0]]), limit: 10)
            #expect(redriven.map(\.id) == [doomed[0]])
            #expect(try await db.string("SELECT ordering_key FROM worker.jobs WHERE id = \(doomed[0])") == "doomed")
            #expect(try await state(db, doomed[0]) == "head")
        }
    }

    /// Whoever holds a key's lock (a producer's open transaction) makes no one
    /// wait: a job inserted meanwhile waits, noted, and the maintenance call
    /// gives the key its head once the lock is free.
    @Test func aKeyLockedElsewhereIsNotedAndHandedOverLater() async throws {
        try await withTestDatabase { db in
            let keys = OrderingKeys(client: db.client, logger: db.logger)
            try await db.client.withConnection { other in
                try await other.query("BEGIN", logger: db.logger)
                try await other.query("SELECT worker.try_lock_ordering_key('default', 'k')", logger: db.logger).drain()
                let id = try await db.queue.enqueue(NewJob(kind: "test", orderingKey: "k"))
                #expect(try await state(db, id) == "blocked")
                #expect(try await db.int("SELECT count(*)::int FROM worker.ordering_wakeups") == 1)
                #expect(try await keys.release() == 0, "the key is still locked")
                try await other.query("COMMIT", logger: db.logger)
                #expect(try await keys.release() == 1)
                #expect(try await state(db, id) == "head")
                #expect(try await db.int("SELECT count(*)::int FROM worker.ordering_wakeups") == 0)

                // The head leaves while the key is locked: the next job is handed over later too.
                let next = try await db.queue.enqueue(NewJob(kind: "test", orderingKey: "k"))
                try await other.query("BEGIN", logger: db.logger)
                try await other.query("SELECT worker.try_lock_ordering_key('default', 'k')", logger: db.logger).drain()
                try await db.execute("DELETE FROM worker.jobs WHERE id = \(id)")
                #expect(try await state(db, next) == "blocked")
                try await other.query("COMMIT", logger: db.logger)
                #expect(try await keys.release() == 1)
                #expect(try await state(db, next) == "head")
            }
        }
    }
}

struct TestFailure: Error {}
