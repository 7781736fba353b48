import Foundation
import PostgresNIO
import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// Job keys (sql/023-025): at most one waiting job per queue, kind and key;
/// a call with the key of a waiting job changes that job as its mode says.
@Suite(.timeLimit(.minutes(2))) struct JobKeyTests {
    /// A job's payload, its key and when it runs, which is (for a run time
    /// in minutes, however slow the test) "soon" or "in an hour or more".
    func job(_ db: TestDatabase, _ id: Int64) async throws -> (payload: String, runsAt: Date, key: String?) {
        let rows = try await db.client.query(
            "SELECT payload::text, coalesce(parked_visible_at, visible_at), job_key FROM worker.jobs WHERE id = \(id)",
            logger: db.logger)
        for try await row in rows.decode((String, Date, String?).self) { return (row.0, row.1, row.2) }
        throw TestFailure()
    }

    func isSoon(_ date: Date) -> Bool { date < Date() + 600 }

    @Test func eachModeChangesTheOneWaitingJobAsItSays() async throws {
        try await withTestDatabase { db in
            func send(_ payload: String, in delay: Duration, _ mode: JobKeyMode = .replace, kind: String = "test",
                      queue: String = "default") async throws -> Enqueued {
                try await db.queue.submit(NewJob(
                    queue: queue, kind: kind, payload: payload, delay: delay, jobKey: "reindex:42", jobKeyMode: mode))
            }
            let first = try await send(#"{"n": 1}"#, in: .seconds(3600))
            #expect(!first.wasWaiting)
            // A debounce: the last call's payload, and its run time.
            #expect(try await !isSoon(job(db, first.id).runsAt))
            let replaced = try await send(#"{"n": 2}"#, in: .seconds(60))
            #expect(replaced == Enqueued(id: first.id, wasWaiting: true))
            let debounced = try await job(db, first.id)
            #expect(debounced.payload == #"{"n": 2}"# && isSoon(debounced.runsAt) && debounced.key == "reindex:42")
            // A throttle: the payload, and the run time it had.
            #expect(try await send(#"{"n": 3}"#, in: .zero, .preserveRunAt) == replaced)
            #expect(try await job(db, first.id) == (#"{"n": 3}"#, debounced.runsAt, "reindex:42"))
            // A dedupe: nothing.
            #expect(try await send(#"{"n": 4}"#, in: .zero, .keep) == replaced)
            #expect(try await job(db, first.id) == (#"{"n": 3}"#, debounced.runsAt, "reindex:42"))
            // The key is the queue's and the kind's: another of either is another job.
            #expect(try await send("{}", in: .zero, kind: "other").wasWaiting == false)
            #expect(try await send("{}", in: .zero, queue: "mail").wasWaiting == false)
            #expect(try await db.jobCount() == 3)

            // A producer's own INSERT dedupes with ON CONFLICT DO NOTHING; without it, it is refused.
            try await db.execute("INSERT INTO worker.jobs (kind, job_key) VALUES ('test', 'reindex:42') ON CONFLICT DO NOTHING")
            #expect(try await db.jobCount() == 3)
            try await db.withLogin(in: "worker_producer") { producer in
                #expect(await producer.sqlState(of: "INSERT INTO worker.jobs (kind, job_key) VALUES ('test', 'reindex:42')") == "23505")
                #expect(await producer.sqlState(
                    of: "INSERT INTO worker.jobs (kind, job_key) VALUES ('test', 'reindex:42') ON CONFLICT DO NOTHING") == nil)
                #expect(await producer.sqlState(of: "INSERT INTO worker.jobs (kind, job_key) VALUES ('test', '')") == "23514")
                // The function replaces as its owner; the producer itself still may not update jobs.
                #expect(await producer.sqlState(of: #"SELECT worker.enqueue('default', 'test', '{"n": 5}', job_key => 'reindex:42')"#) == nil)
                #expect(await producer.sqlState(of: "UPDATE worker.jobs SET payload = '{}'") == RoleTests.denied)
                #expect(await producer.sqlState(of: "SELECT worker.enqueue('default', 'test', job_key => 'k', job_key_mode => 'merge')") == "22023")
            }
            #expect(try await job(db, first.id).payload == #"{"n": 5}"#)
            #expect(try await db.jobCount() == 3)
        }
    }

    @Test func aClaimedJobGivesUpItsKeySoACallWhileItRunsMakesANewJob() async throws {
        try await withTestDatabase { db in
            let started = Gate(), finish = Gate()
            let handler = RecordingHandler { job, _ in
                if job.payload.contains("\"n\": 1") {
                    started.open()
                    await finish.wait()
                    throw TestFailure()  // and waits out a backoff: retrying what it read, it holds no key
                }
            }
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"n": 1}"#, jobKey: "k"))
            let configuration = WorkerConfiguration(concurrency: 1, batchSize: 1, pollInterval: .milliseconds(50), workerID: "w")
            try await withWorker(db, .testing(handler), configuration) { _ in
                await started.wait()
                #expect(try await job(db, first).key == nil)
                let second = try await db.queue.submit(NewJob(kind: "test", payload: #"{"n": 2}"#, jobKey: "k"))
                #expect(second.id != first && !second.wasWaiting)
                finish.open()
                try await eventually("the second job to run") { handler.invocations(of: second.id) == 1 }
                try await eventually("the first job's retry") { handler.invocations(of: first) >= 2 }
            }
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE job_key IS NOT NULL") == 0)
            #expect(handler.invocations.filter { $0.payload.contains("\"n\": 2") }.count == 1)
        }
    }

    /// What the key promises under load: one producer sends versions 1 to
    /// 300 under one key while a fleet claims, fails and retries its jobs;
    /// the last version is processed (a call that changed a job already
    /// read would have lost it).
    @Test func theLastVersionSentUnderAKeyIsProcessedWhileAFleetRuns() async throws {
        try await withTestDatabase(connections: 3 * WorkerConfiguration(concurrency: 2).connectionsNeeded + 4) { db in
            let highest = Mutex(0)
            let handler = RecordingHandler { job, _ in
                let version = Int(job.payload.filter(\.isNumber)) ?? 0
                if Int.random(in: 0..<4) == 0 { throw TestFailure() }  // retried: it runs again with what it read
                highest.withLock { $0 = max($0, version) }
            }
            let policy = RetryPolicy(base: .milliseconds(5), rate: 2, cap: .milliseconds(20), maxAttempts: 100, maxAge: nil)
            let workers = (0..<3).map { n in
                Worker(client: db.client, configuration: WorkerConfiguration(
                    concurrency: 2, batchSize: 5, pollInterval: .milliseconds(20), workerID: "w\(n)"),
                    handlers: .testing(handler, policy: policy), logger: db.logger)
            }
            let running = workers.map { worker in Task { try await worker.run() } }
            for version in 1...300 {
                try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"v": \#(version)}"#, jobKey: "k"))
            }
            try await eventually("the queue to drain") { try await db.jobCount() == 0 }
            for worker in workers { worker.stop() }
            for task in running { try await task.value }
            #expect(highest.withLock { $0 } == 300)
        }
    }

    @Test func aCallThatMeetsAClaimInProgressWaitsForItAndMakesANewJob() async throws {
        try await withTestDatabase { db in
            let first = try await db.queue.enqueue(NewJob(kind: "test", jobKey: "k"))
            try await db.client.withConnection { claimer in
                try await claimer.query("BEGIN", logger: db.logger).drain()
                let claimed = try await claimer.query("SELECT id FROM worker.claim('default', 1, 30000, 'w')", logger: db.logger)
                for try await id in claimed.decode(Int64.self) { #expect(id == first) }
                // The key's unique entry is the claim's until it commits: the call waits for it.
                let call = Task { try await db.queue.submit(NewJob(kind: "test", payload: #"{"n": 2}"#, jobKey: "k")) }
                try await eventually("the call to wait for the claim") {
                    try await db.sessionsWaitingForALock() == 1
                }
                try await claimer.query("COMMIT", logger: db.logger).drain()
                let second = try await call.value
                #expect(second.id != first && !second.wasWaiting)
            }
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE job_key = 'k'") == 1)
        }
    }

    @Test func aReplacedRunTimeWakesAnIdleWorker() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let waiting = try await db.queue.enqueue(NewJob(kind: "test", delay: .seconds(3600), jobKey: "k"))
            let configuration = WorkerConfiguration(concurrency: 1, pollInterval: .seconds(3600), workerID: "w")
            try await withWorker(db, .testing(handler), configuration) { _ in
                try await eventually("the listener to connect") {
                    try await db.listenerConnected()
                }
                // An update notifies nobody by itself: within the suite's time limit, only the call's notification can wake the worker.
                #expect(try await db.queue.submit(NewJob(kind: "test", jobKey: "k")) == Enqueued(id: waiting, wasWaiting: true))
                try await eventually("the job, ready now, to run") { handler.invocations(of: waiting) == 1 }
            }
        }
    }

    @Test func keepLocksNothingSoAnOpenTransactionHoldsNoClaimBack() async throws {
        try await withTestDatabase { db in
            let waiting = try await db.queue.enqueue(NewJob(kind: "test", jobKey: "k"))
            try await db.client.withConnection { producer in
                try await producer.query("BEGIN", logger: db.logger).drain()
                let kept = try await producer.query(
                    "SELECT worker.enqueue('default', 'test', job_key => 'k', job_key_mode => 'keep')", logger: db.logger)
                for try await id in kept.decode(Int64.self) { #expect(id == waiting) }
                // The producer's transaction is still open: the claim takes the job all the same.
                let claimed = try await db.queue.claim(queue: "default", limit: 5, visibilityTimeout: .seconds(30), workerID: "w")
                #expect(claimed.map(\.id) == [waiting])
                try await producer.query("COMMIT", logger: db.logger).drain()
            }
            #expect(try await db.jobCount() == 1)
        }
    }

    @Test func aCallIsToldAJobWaitedWhenItsProducerCommittedDuringTheCall() async throws {
        try await withTestDatabase { db in
            try await db.client.withConnection { producer in
                try await producer.query("BEGIN", logger: db.logger).drain()
                let inserted = try await producer.query(
                    "INSERT INTO worker.jobs (kind, job_key) VALUES ('test', 'k') RETURNING id", logger: db.logger)
                var first: Int64?
                for try await id in inserted.decode(Int64.self) { first = id }
                // The call meets the uncommitted job's index entry and waits for its producer.
                let call = Task { try await db.queue.submit(NewJob(kind: "test", payload: #"{"n": 2}"#, jobKey: "k")) }
                try await eventually("the call to wait for the producer") {
                    try await db.sessionsWaitingForALock() == 1
                }
                try await producer.query("COMMIT", logger: db.logger).drain()
                #expect(try await call.value == Enqueued(id: try #require(first), wasWaiting: true))
            }
            #expect(try await db.jobCount() == 1)
        }
    }

    @Test func aJobKeyAndAnOrderingKeyDoNotGoTogether() async throws {
        try await withTestDatabase { db in
            do {
                _ = try await db.queue.submit(NewJob(kind: "test", orderingKey: "o", jobKey: "k"))
                Issue.record("a job took both keys")
            } catch let error as PSQLError {
                #expect(error.serverInfo?[.message] == "a job takes a job_key or an ordering_key, not both")
            }
            try await db.withLogin(in: "worker_producer") { producer in
                #expect(await producer.sqlState(of: "INSERT INTO worker.jobs (kind, job_key, ordering_key) VALUES ('test', 'k', 'o')") == "23514")
            }
            #expect(try await db.jobCount() == 0)
        }
    }

    /// sql/026: parked with no run time, a job looked like its key's head,
    /// and the key's later jobs waited for ever.
    @Test func aJobOfAnOrderingKeyWithoutARunTimeIsRefused() async throws {
        try await withTestDatabase { db in
            try await db.queue.enqueue(NewJob(kind: "test", orderingKey: "o"))
            try await db.withLogin(in: "worker_producer") { producer in
                for statement: PostgresQuery in [
                    "INSERT INTO worker.jobs (kind, ordering_key, visible_at) VALUES ('test', 'o', NULL)",
                    "SELECT worker.enqueue('default', 'test', run_at => NULL, ordering_key => 'o')",
                    "INSERT INTO worker.jobs (kind, visible_at) VALUES ('test', NULL)",
                ] {
                    #expect(await producer.sqlState(of: statement) == "23502", "\(statement.sql)")
                }
            }
            #expect(try await db.jobCount() == 1)
        }
    }

    @Test func workerctlEnqueuesUnderAKeyAndSaysWhatTheWaitingJobTook() async throws {
        try await withTestDatabase { db in
            func run(_ arguments: [String]) async throws -> ToolResult {
                try await runTool("workerctl", ["enqueue", "--kind", "noop"] + arguments, database: db)
            }
            func run(_ arguments: String...) async throws -> ToolResult { try await run(arguments) }
            for (arguments, message) in [
                (["--job-key", "k", "--count", "2"], "--job-key names one waiting job: --count must be 1"),
                (["--job-key", ""], "--job-key is empty; leave it out for no key"),
                (["--job-key", "k", "--job-key-mode", "merge"], "--job-key-mode must be replace, preserve_run_at or keep, not 'merge'"),
                (["--job-key-mode", "keep"], "--job-key-mode needs --job-key"),
                (["--job-key", "k", "--ordering-key", "o"], "--job-key and --ordering-key do not go together"),
            ] {
                let refused = try await run(arguments)
                #expect(refused.status == 64 && refused.stderr.contains(message), "\(arguments): \(refused)")
            }
            let first = try await run("--job-key", "k", "--delay", "1h")
            #expect(first.status == 0 && first.stdout.hasPrefix("enqueued job "), "\(first)")
            let id = try #require(Int64(first.stdout.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
            for (mode, took) in [("replace", "took this payload and run time"), ("preserve_run_at", "took this payload; its run time stays"),
                                 ("keep", "stays as it was")] {
                let again = try await run("--job-key", "k", "--job-key-mode", mode, "--payload", #"{"mode": "\#(mode)"}"#)
                #expect(again.status == 0 && again.stdout == "job \(id) waits under job key 'k': it \(took)\n", "\(again)")
            }
            #expect(try await job(db, id).payload == #"{"mode": "preserve_run_at"}"#)
            let shown = try await runTool("workerctl", ["jobs", "show", "\(id)"], database: db)
            #expect(shown.stdout.contains("job key:         k\n"), "\(shown)")
        }
    }
}
