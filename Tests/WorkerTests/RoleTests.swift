import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerTestSupport

/// The three roles of sql/005: each side gets what it needs and nothing else.
@Suite(.timeLimit(.minutes(2))) struct RoleTests {
    static let denied = "42501"  // insufficient_privilege

    @Test func aProducerCanEnqueueButNotReadPayloadsTouchTheDLQOrTheBusinessTables() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: #"{"secret": "card 4242"}"#))
            try await db.execute("INSERT INTO worker.dead_letters SELECT id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at, redrive_count, 'max_attempts', NULL, errors FROM worker.jobs")
            try await db.withLogin(in: "worker_producer") { producer in
                #expect(await producer.sqlState(of: "INSERT INTO worker.jobs (queue, kind, payload) VALUES ('default', 'noop', '{}') RETURNING id") == nil)
                #expect(await producer.sqlState(of: #"SELECT worker.enqueue('default', 'noop', '{"n": 1}', idempotency_key => 'k')"#) == nil)
                // Keyed jobs: the triggers that park the second one run with their owner's rights.
                #expect(await producer.sqlState(of: "INSERT INTO worker.jobs (kind, ordering_key) VALUES ('noop', 'o'), ('noop', 'o')") == nil)
                #expect(await producer.sqlState(of: "SELECT worker.enqueue('default', 'noop', ordering_key => 'o')") == nil)
                let forbidden: [PostgresQuery] = [
                    "INSERT INTO worker.jobs (kind, parked_visible_at) VALUES ('noop', now())",
                    "SELECT * FROM worker.ordering_wakeups",
                    "SELECT worker.release_ordering_keys(10)",
                    "SELECT payload FROM worker.jobs",
                    "SELECT * FROM worker.jobs",
                    "UPDATE worker.jobs SET attempts = 0",
                    "DELETE FROM worker.jobs",
                    "INSERT INTO worker.jobs (kind, lease_token) VALUES ('noop', gen_random_uuid())",
                    "INSERT INTO worker.jobs (kind, attempts) VALUES ('noop', 5)",
                    "SELECT * FROM worker.dead_letters",
                    "DELETE FROM worker.dead_letters",
                    "SELECT * FROM worker.idempotency_keys",
                    "INSERT INTO worker.queue_pauses (queue) VALUES ('default')",
                    "INSERT INTO worker.schedules (name, cron, kind) VALUES ('s', '@daily', 'noop')",
                    "SELECT * FROM worker.workers",
                    "SELECT * FROM app.payments",
                    "UPDATE app.flights SET seats_available = 0",
                    "INSERT INTO app.refunds (refund_id, payment_id, amount_cents, currency, job_id) VALUES ('r', 'p', 1, 'EUR', 1)",
                    "CREATE TABLE worker.mine (a int)",
                ]
                for statement in forbidden {
                    #expect(await producer.sqlState(of: statement) == Self.denied, "\(statement.sql)")
                }
            }
            #expect(try await db.jobCount() == 6)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE ordering_key = 'o' AND parked_visible_at IS NOT NULL") == 2)
            #expect(try await db.deadCount() == 1)
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE lease_token IS NOT NULL OR attempts > 0") == 0)
        }
    }

    @Test func workerdRunsAsTheConsumerRoleThroughEveryPathAndNoFurther() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES ('pay_1', 1000, 'EUR')")
            try await db.execute("INSERT INTO app.flights (id, seats_total, seats_available) VALUES ('LH400', 1, 1)")
            let refund = #"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 300, "currency": "EUR"}"#
            let booking = #"{"request_id": "bk_1", "flight_id": "LH400", "seats": 1, "amount_cents": 5000, "currency": "EUR"}"#
            for payload in [refund, refund] { _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: payload)) }
            _ = try await db.queue.enqueue(NewJob(kind: "booking.requested", payload: booking))
            _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: #"{"refund_id": 7}"#))  // invalid
            _ = try await db.queue.enqueue(NewJob(kind: "no.such.kind"))
            // A schedule's run, due.
            try await db.execute("INSERT INTO worker.schedules (name, cron, kind, next_run_at) VALUES ('yearly', '@yearly', 'noop', now() - interval '1 minute')")
            // Its claims count the leases under a limit and spend the tokens of a rate.
            try await db.execute("""
                INSERT INTO worker.queue_limits (queue, max_in_flight, max_per_second, burst, tokens, tokens_at)
                VALUES ('default', 2, 1000, 1000, 1000, now())
                """)
            // An expired key for the sweeper.
            try await db.execute("INSERT INTO worker.idempotency_keys (key, kind, job_id, payload_hash, status, expires_at) VALUES ('old', 'refund.requested', 1, 'x', 'completed', now() - interval '1 hour')")

            try await db.withLogin(in: "worker_consumer") { consumer in
                let workerd = try ToolProcess("workerd", ["--worker-id", "consumer", "--sweep-interval", "1s"],
                                              environment: ["DATABASE_URL": consumer.url])
                try await eventually("the queue to drain and the key to be swept") {
                    // In this order: the schedule's run is enqueued before the queue is found empty.
                    let scheduled = try await db.int("SELECT count(*)::int FROM worker.schedules WHERE last_run_at IS NOT NULL") == 1
                    let swept = try await db.int("SELECT count(*)::int FROM worker.idempotency_keys WHERE key = 'old'") == 0
                    let empty = try await db.jobCount() == 0
                    return scheduled && swept && empty
                }
                try await eventually("workerd to report itself") {
                    try await db.int("SELECT count(*)::int FROM worker.workers WHERE id = 'consumer'") == 1
                }
                workerd.send(SIGTERM)
                let result = await workerd.result()
                #expect(result.status == 0, "\(result)")
                #expect(!result.stderr.contains("permission denied"), "\(result.stderr)")
                #expect(try await db.int("SELECT count(*)::int FROM worker.workers") == 0,
                        "removed itself as it stopped: \(result.stderr.suffix(3000))")

                for statement: PostgresQuery in [
                    "DELETE FROM worker.dead_letters", "UPDATE worker.dead_letters SET reason = 'x'",
                    "INSERT INTO worker.queue_pauses (queue) VALUES ('default')", "DELETE FROM worker.queue_pauses",
                    "DELETE FROM app.payments", "DROP TABLE worker.jobs", "DELETE FROM worker.schema_migrations",
                    "INSERT INTO worker.schedules (name, cron, kind) VALUES ('s', '@daily', 'noop')",
                    "UPDATE worker.schedules SET cron = '* * * * *'", "UPDATE worker.schedules SET paused = true",
                    "DELETE FROM worker.schedules", "UPDATE worker.queue_limits SET max_in_flight = 100",
                    "DELETE FROM worker.queue_limits",
                    "INSERT INTO worker.cancel_requests (job_id, request_id, note, expires_at) VALUES (1, gen_random_uuid(), 'n', now())",
                    "DELETE FROM worker.cancel_requests",
                ] {
                    #expect(await consumer.sqlState(of: statement) == Self.denied, "\(statement.sql)")
                }
                // What workerd reads when told of a cancel: its requests and the cancelled dead letters.
                #expect(try await CancelRequests(client: consumer.client, logger: db.logger).notes(for: [1]).isEmpty)
            }
            #expect(try await db.int("SELECT refunded_cents::int FROM app.payments WHERE id = 'pay_1'") == 300)
            #expect(try await db.string("SELECT status FROM app.bookings WHERE request_id = 'bk_1'") == "confirmed")
            #expect(try await db.deadCount() == 2)
            #expect(try await db.int("SELECT sum(done + duplicates)::int FROM worker.throughput WHERE worker_id = 'consumer'") == 4)
            #expect(try await db.int("SELECT sum(done)::int FROM worker.throughput WHERE kind = 'noop'") == 1, "the scheduled run")
        }
    }

    @Test func workerctlRunsAsTheAdminRoleWhichMayNotChangeTheBusinessTables() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES ('pay_1', 1000, 'EUR')")
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            try await db.execute("INSERT INTO worker.dead_letters SELECT id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at, redrive_count, 'max_attempts', NULL, errors FROM worker.jobs")
            try await db.execute("DELETE FROM worker.jobs")
            try await db.withLogin(in: "worker_admin") { admin in
                let env = ["DATABASE_URL": admin.url]
                for arguments in [["stats"], ["stats", "--json"], ["dlq", "list"], ["pause", "mail"], ["resume", "mail"],
                                  ["redrive", "--all"], ["sweep"], ["enqueue", "--kind", "noop"], ["jobs", "list"],
                                  ["jobs", "retry", "--all"], ["jobs", "cancel", "--kind", "noop"], ["workers"],
                                  ["schedules", "set", "s", "--cron", "@daily", "--kind", "noop"], ["schedules", "pause", "s"],
                                  ["schedules", "resume", "s"], ["schedules", "list"], ["schedules", "remove", "s"],
                                  ["limits", "set", "mail", "--max-in-flight", "2"], ["limits", "list"], ["limits", "remove", "mail"]] {
                    let run = try await runTool("workerctl", arguments, environment: env)
                    #expect(run.status == 0, "workerctl \(arguments.joined(separator: " ")): \(run)")
                }
                for statement: PostgresQuery in [
                    "UPDATE app.payments SET refunded_cents = 1000", "DELETE FROM app.payments",
                    "DROP TABLE worker.jobs", "CREATE TABLE worker.mine (a int)",
                ] {
                    #expect(await admin.sqlState(of: statement) == Self.denied, "\(statement.sql)")
                }
            }
            #expect(try await db.jobCount() == 1)
            #expect(try await db.string("SELECT kind || ' ' || reason FROM worker.dead_letters") == "noop cancelled")
        }
    }
}
