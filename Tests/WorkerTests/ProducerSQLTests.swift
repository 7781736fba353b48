import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

/// The SQL the README gives producers works as written.
@Suite(.timeLimit(.minutes(2))) struct ProducerSQLTests {
    @Test func aBareInsertOfQueueKindAndPayloadIsAValidJob() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO worker.jobs (queue, kind, payload) VALUES ('default', 'noop', '{\"n\": 1}')")
            try await db.execute("INSERT INTO worker.jobs (kind) VALUES ('noop')")
            let jobs = try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "t")
            #expect(jobs.count == 2)
            #expect(jobs.allSatisfy { $0.attempts == 1 && $0.priority == 0 && $0.maxAttempts == nil })
            #expect(jobs.contains { $0.payload == #"{"n": 1}"# })
        }
    }

    @Test func theEnqueueFunctionTakesNamedArguments() async throws {
        try await withTestDatabase { db in
            let id = try await db.int(
                "SELECT worker.enqueue('mail', 'noop', '{}', idempotency_key => 'k1', priority => 2::smallint, max_attempts => 4)::int")
            let rows = try await db.client.query(
                "SELECT queue, idempotency_key, priority, max_attempts FROM worker.jobs WHERE id = \(id)", logger: db.logger)
            for try await (queue, key, priority, maxAttempts) in rows.decode((String, String?, Int, Int?).self) {
                #expect(queue == "mail" && key == "k1" && priority == 2 && maxAttempts == 4)
            }
            // With an ordering key, the second of a key waits for the first.
            for _ in 0..<2 { try await db.execute("SELECT worker.enqueue('mail', 'noop', ordering_key => 'acct-1')") }
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE ordering_key = 'acct-1' AND parked_visible_at IS NOT NULL") == 1)
            // A scheduled job is not claimable before its time.
            try await db.execute("SELECT worker.enqueue('later', 'noop', run_at => now() + interval '1 hour')")
            #expect(try await db.queue.claim(queue: "later", limit: 1, visibilityTimeout: .seconds(1), workerID: "t").isEmpty)
        }
    }

    @Test func invalidRowsAreRejectedWithAConstraintName() async throws {
        try await withTestDatabase { db in
            await #expect(throws: PSQLError.self) { try await db.execute("INSERT INTO worker.jobs (queue, kind) VALUES ('', 'noop')") }
            await #expect(throws: PSQLError.self) { try await db.execute("INSERT INTO worker.jobs (queue) VALUES ('q')") }
            await #expect(throws: PSQLError.self) { try await db.execute("INSERT INTO worker.jobs (kind, max_attempts) VALUES ('noop', 0)") }
            let jobs = try await db.jobCount()
            #expect(jobs == 0)
        }
    }

    @Test func anInsertNotifiesListenersOncePerQueue() async throws {
        try await withTestDatabase { db in
            let payloads = try await db.client.withConnection { listener in
                try await listener.listen(on: "worker_jobs") { notifications in
                    try await db.execute(
                        "INSERT INTO worker.jobs (queue, kind) SELECT q, 'noop' FROM unnest(ARRAY['a','a','b','a']) AS q")
                    var seen: [String] = []
                    for try await notification in notifications {
                        seen.append(notification.payload)
                        if seen.count == 2 { break }
                    }
                    return seen.sorted()
                }
            }
            #expect(payloads == ["a", "b"])
        }
    }
}
