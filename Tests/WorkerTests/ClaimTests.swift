import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct ClaimTests {
    @Test func aClaimCommitsTheAttemptALeaseAndTheWorker() async throws {
        try await withTestDatabase { db in
            let id = try await db.queue.enqueue(NewJob(kind: "noop"))
            let jobs = try await db.queue.claim(queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w1")
            #expect(jobs.map(\.id) == [id])
            let job = try #require(jobs.first)
            #expect(job.attempts == 1)
            let rows = try await db.client.query(
                """
                SELECT attempts, lease_token, leased_by,
                       visible_at - leased_at = interval '30 seconds'
                FROM worker.jobs WHERE id = \(id)
                """, logger: db.logger)
            for try await (attempts, token, worker, leaseLength) in rows.decode((Int, UUID, String, Bool).self) {
                #expect(attempts == 1)
                #expect(token == job.lease.token)
                #expect(worker == "w1")
                #expect(leaseLength)
            }
            // Leased: no other claim sees it.
            #expect(try await db.queue.claim(queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w2").isEmpty)
        }
    }

    @Test func payloadsOverTheLimitAreNotParsed() async throws {
        try await withTestDatabase { db in
            let small = try await db.queue.enqueue(NewJob(kind: "noop", payload: #"{"n": 1}"#))
            let large = try await db.queue.enqueue(NewJob(kind: "noop", payload: #"{"n": 12345678901}"#))
            let jobs = try await db.queue.claim(
                queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w", payloadLimit: 12)
            let documents = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0.document) })
            #expect(documents[small] == .some(.object(["n": .integer(1)])))
            #expect(documents[large] == .some(nil))
            #expect(jobs.first { $0.id == large }?.payload == #"{"n": 12345678901}"#)
        }
    }

    @Test func concurrentWorkersNeverGetTheSameJob() async throws {
        try await withTestDatabase(connections: 12) { db in
            _ = try await db.queue.enqueue(NewJob(kind: "noop"), count: 2000)
            let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for worker in 0..<10 {
                    group.addTask {
                        var mine: [Int64] = []
                        while true {
                            let jobs = try await db.queue.claim(
                                queue: "default", limit: 7, visibilityTimeout: .seconds(60), workerID: "w\(worker)")
                            if jobs.isEmpty { return mine }
                            mine += jobs.map(\.id)
                        }
                    }
                }
                return try await group.reduce(into: [Int64]()) { $0 += $1 }
            }
            #expect(claimed.count == 2000)
            #expect(Set(claimed).count == 2000)
        }
    }

    @Test func lowerPriorityRunsFirstThenOldestFirst() async throws {
        try await withTestDatabase { db in
            let late = try await db.queue.enqueue(NewJob(kind: "noop", priority: 5))
            let first = try await db.queue.enqueue(NewJob(kind: "noop", priority: 0))
            let second = try await db.queue.enqueue(NewJob(kind: "noop", priority: 0))
            let urgent = try await db.queue.enqueue(NewJob(kind: "noop", priority: -1))
            var order: [Int64] = []
            for _ in 0..<4 {
                order += try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w").map(\.id)
            }
            #expect(order == [urgent, first, second, late])
        }
    }

    @Test func aBatchTakesPriorityLevelsInOrderPastJobsThatAreNotReady() async throws {
        try await withTestDatabase { db in
            try await db.queue.enqueue(NewJob(kind: "noop", priority: -2, delay: .seconds(3600)))
            let urgent = try await db.queue.enqueue(NewJob(kind: "noop", priority: -1))
            try await db.queue.enqueue(NewJob(kind: "noop", priority: 0, delay: .seconds(3600)))
            let first = try await db.queue.enqueue(NewJob(kind: "noop", priority: 0))
            let second = try await db.queue.enqueue(NewJob(kind: "noop", priority: 0))
            let late = try await db.queue.enqueue(NewJob(kind: "noop", priority: 5))
            let claim = { (limit: Int) in
                try await db.queue.claim(queue: "default", limit: limit, visibilityTimeout: .seconds(30), workerID: "w").map(\.id)
            }
            #expect(try await claim(3) == [urgent, first, second])
            #expect(try await claim(10) == [late])
            #expect(try await claim(10) == [])
        }
    }

    /// Jobs that wait for later (scheduled, backing off, leased) at a level
    /// with fewer ready jobs than the batch are not read past (sql/013).
    @Test func aClaimDoesNotReadPastJobsThatWaitForLater() async throws {
        try await withTestDatabase { db in
            try await db.execute("""
                INSERT INTO worker.jobs (kind, priority, visible_at)
                SELECT 'noop', 0, now() + interval '1 day' FROM generate_series(1, 50000)
                """)
            try await db.execute("INSERT INTO worker.jobs (kind, priority) SELECT 'noop', 1 FROM generate_series(1, 10)")
            try await db.execute("VACUUM ANALYZE worker.jobs")
            // sql/008's claim read past the 50,000 waiting jobs' index entries: 317 buffers, here 29.
            let buffers = try await db.claimBuffers(batch: 1)
            #expect(buffers < 100, "a claim of one job read \(buffers) buffers")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE priority = 1 AND attempts = 1") == 2)
        }
    }

    /// Rows only the owner could write (a hand edit, a restore) must not stop
    /// a queue: attempts at int4's top overflowed every claim of the queue,
    /// and an infinite created_at failed every read of the stats.
    @Test func aJobWrittenAtTheEdgeOfItsTypesStopsNeitherItsQueueNorTheStats() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO worker.jobs (kind, attempts, created_at) VALUES ('noop', 2147483647, 'infinity')")
            let normal = try await db.queue.enqueue(NewJob(kind: "noop"))
            let jobs = try await db.queue.claim(queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w1")
            #expect(jobs.count == 2 && jobs.contains { $0.id == normal })
            #expect(jobs.map(\.attempts).max() == 2147483647)
            try await db.makeAllDue()
            _ = try await db.queue.enqueue(NewJob(kind: "noop"))
            #expect(try await QueueStats.read(client: db.client, logger: db.logger).first?.ready == 3)
        }
    }

    @Test func claimsOnlyTheNamedQueue() async throws {
        try await withTestDatabase { db in
            try await db.queue.enqueue(NewJob(queue: "a", kind: "noop"))
            let b = try await db.queue.enqueue(NewJob(queue: "b", kind: "noop"))
            let jobs = try await db.queue.claim(queue: "b", limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
            #expect(jobs.map(\.id) == [b])
        }
    }

    @Test func aCrashedWorkersJobComesBackAfterTheVisibilityTimeoutAndNotBefore() async throws {
        try await withTestDatabase { db in
            let id = try await db.queue.enqueue(NewJob(kind: "noop"))
            // The "crashed" worker claims and never acks. A lease of 10 s: the claim right
            // after it must find nothing even on a machine loaded by the whole suite.
            let lost = try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(10), workerID: "crashed")
            #expect(lost.map(\.id) == [id])
            #expect(try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w2").isEmpty)

            var again: [Job] = []
            try await eventually("the lease to expire") {
                again = try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(30), workerID: "w2")
                return !again.isEmpty
            }
            let job = try #require(again.first)
            #expect(job.id == id)
            #expect(job.attempts == 2)
            #expect(job.lease.token != lost[0].lease.token)
            // The lost attempt is in the error history.
            let history = try await db.int(
                "SELECT jsonb_array_length(errors)::int FROM worker.jobs WHERE id = \(id) AND last_error LIKE 'lease expired%'")
            #expect(history == 1)
        }
    }

    @Test func aJobWhoseLeaseExpiredIsClaimedAloneAndABatchStopsBeforeIt() async throws {
        try await withTestDatabase { db in
            let ids = Array(try await db.queue.enqueue(NewJob(kind: "noop"), count: 6))
            func claim() async throws -> [Int64] {
                try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "w").map(\.id)
            }
            // A worker took the second and third and died with them.
            try await db.execute("UPDATE worker.jobs SET visible_at = now() + interval '1 hour' WHERE id NOT IN (\(ids[1]), \(ids[2]))")
            #expect(try await claim() == [ids[1], ids[2]])
            try await db.makeAllDue()
            #expect(try await claim() == [ids[0]])  // stops before the first expired one
            try await db.execute("DELETE FROM worker.jobs WHERE id = \(ids[0])")  // done
            #expect(try await claim() == [ids[1]])  // alone
            #expect(try await claim() == [ids[2]])  // alone
            #expect(try await claim() == Array(ids[3...]))
        }
    }

    @Test func theHeartbeatExtendsOnlyLeasesStillHeld() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(kind: "noop"), count: 2)
            let jobs = try await db.queue.claim(queue: "default", limit: 2, visibilityTimeout: .seconds(2), workerID: "w")
            let stolen = Lease(jobID: jobs[1].id, token: UUID())
            let extended = try await db.queue.extend([jobs[0].lease, stolen], visibilityTimeout: .seconds(600))
            #expect(extended == [jobs[0].lease])
            let farOut = try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE visible_at > now() + interval '500 seconds'")
            #expect(farOut == 1)
        }
    }

    @Test func releasingGivesTheAttemptBack() async throws {
        try await withTestDatabase { db in
            let id = try await db.queue.enqueue(NewJob(kind: "noop"))
            let jobs = try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(60), workerID: "w")
            #expect(try await db.queue.release(jobs.map(\.lease)) == 1)
            let again = try await db.queue.claim(queue: "default", limit: 1, visibilityTimeout: .seconds(60), workerID: "w")
            #expect(again.map(\.id) == [id])
            #expect(again.first?.attempts == 1)
        }
    }

    /// Planned over statistics taken while the queue was empty, the claim once
    /// sorted every waiting job for each batch and the ack scanned the whole
    /// table. sql/008's functions leave their planner no such choice.
    @Test func aBatchReadsTheQueueByIndexOverStatisticsOfAnEmptyQueue() async throws {
        try await withTestDatabase { db in
            try await db.execute("ANALYZE worker.jobs, worker.idempotency_keys")
            _ = try await db.queue.enqueue(NewJob(kind: "noop"), count: 5000)
            let before = try await QueueReads.read(db)
            try await db.client.withConnection { connection in
                var ids: [Int64] = [], tokens: [UUID] = []
                let claimed = try await connection.query(
                    "SELECT id, lease_token FROM worker.claim('default', 10, 30000, 'w')", logger: db.logger)
                for try await (id, token) in claimed.decode((Int64, UUID).self) {
                    ids.append(id)
                    tokens.append(token)
                }
                #expect(ids.count == 10)
                try await connection.query("BEGIN", logger: db.logger)
                let locked = try await connection.query(
                    "SELECT count(*)::int FROM worker.lock_jobs(\(ids), \(tokens))", logger: db.logger)
                for try await count in locked.decode(Int.self) { #expect(count == 10) }
                let keyed = try await connection.query(
                    """
                    SELECT count(*) FILTER (WHERE owned)::int FROM worker.claim_keys(
                        \(ids), \(ids.map { "key-\($0)" }), \(ids.map { _ in true }), \(ids.map { _ in Int64(60_000) }))
                    """, logger: db.logger)
                for try await owned in keyed.decode(Int.self) { #expect(owned == 10) }
                let acked = try await connection.query(
                    "SELECT count(*)::int FROM worker.ack_jobs(\(ids), \(tokens), '{}', '{}')", logger: db.logger)
                for try await count in acked.decode(Int.self) { #expect(count == 10) }
                try await connection.query("COMMIT", logger: db.logger)
                try await connection.query("SELECT pg_stat_force_next_flush()", logger: db.logger).drain()
            }
            try await eventually("the batch's statistics") { try await QueueReads.read(db).deleted == before.deleted + 10 }
            let after = try await QueueReads.read(db)
            #expect(after.sequentialScans == before.sequentialScans)
            #expect(after.keySequentialScans == before.keySequentialScans)
            #expect(after.claimIndexEntriesRead - before.claimIndexEntriesRead < 100)
        }
    }
}

/// The server's counters of how worker.jobs was read.
private struct QueueReads {
    var sequentialScans: Int
    var keySequentialScans: Int
    var deleted: Int
    var claimIndexEntriesRead: Int

    static func read(_ db: TestDatabase) async throws -> QueueReads {
        let rows = try await db.client.query(
            """
            SELECT t.seq_scan::int, k.seq_scan::int, t.n_tup_del::int, i.idx_tup_read::int
            FROM pg_stat_user_tables AS t
            JOIN pg_stat_user_indexes AS i ON i.relid = t.relid AND i.indexrelname = 'jobs_claim_idx'
            JOIN pg_stat_user_tables AS k ON k.relid = 'worker.idempotency_keys'::regclass
            WHERE t.relid = 'worker.jobs'::regclass
            """, logger: db.logger)
        for try await (scans, keyScans, deleted, read) in rows.decode((Int, Int, Int, Int).self) {
            return QueueReads(sequentialScans: scans, keySequentialScans: keyScans, deleted: deleted, claimIndexEntriesRead: read)
        }
        throw PostgresWorkerError.unexpected("no statistics for worker.jobs")
    }
}
