import Foundation
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `workerctl pause` / `resume`: a paused queue is claimed by no worker.
@Suite(.timeLimit(.minutes(2))) struct PauseTests {
    @Test func aPausedQueueYieldsNothingToClaimUntilResumedAndOtherQueuesFlow() async throws {
        try await withTestDatabase { db in
            let pauses = QueuePauses(client: db.client, logger: db.logger)
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 3)
            _ = try await db.queue.enqueue(NewJob(queue: "sms", kind: "test"), count: 2)
            #expect(try await pauses.pause("mail", reason: "provider outage"))
            #expect(try await !pauses.pause("mail"))
            #expect(try await db.queue.claim(queue: "mail", limit: 10, visibilityTimeout: .seconds(30), workerID: "w").isEmpty)
            #expect(try await db.queue.claim(queue: "sms", limit: 10, visibilityTimeout: .seconds(30), workerID: "w").count == 2)
            #expect(try await pauses.list().map(\.reason) == ["provider outage"])

            #expect(try await pauses.resume("mail"))
            #expect(try await !pauses.resume("mail"))
            #expect(try await db.queue.claim(queue: "mail", limit: 10, visibilityTimeout: .seconds(30), workerID: "w").count == 3)
        }
    }

    @Test func runningWorkersStopClaimingAPausedQueueAndResumeAtOnce() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let pauses = QueuePauses(client: db.client, logger: db.logger)
            try await pauses.pause("mail")
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"), count: 5)
            _ = try await db.queue.enqueue(NewJob(queue: "sms", kind: "test"), count: 5)
            // An hour's poll interval: after the resume only its notification can wake the worker in time.
            let config = WorkerConfiguration(queues: ["mail", "sms"], concurrency: 2, batchSize: 1, pollInterval: .seconds(3600), workerID: "w")
            let worker = Worker(client: db.client, configuration: config, handlers: .testing(handler), logger: db.logger)
            let running = Task { try await worker.run() }
            // Every lane takes turns over both queues, so by the time sms is drained each lane
            // has asked for mail jobs several times.
            try await eventually("sms to drain") { try await db.int("SELECT count(*)::int FROM worker.jobs WHERE queue = 'sms'") == 0 }
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE queue = 'mail' AND attempts = 0") == 5)

            try await pauses.resume("mail")
            try await eventually("mail to drain after the resume") { try await db.jobCount() == 0 }
            worker.stop()
            try await running.value
            #expect(handler.invocations.count == 10)
        }
    }

    @Test func workerctlPausesAndResumesAndStatsShowsIt() async throws {
        try await withTestDatabase { db in
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            let pause = try await runTool("workerctl", ["pause", "mail", "--reason", "it's; DROP TABLE worker.jobs --"], database: db)
            #expect(pause.status == 0 && pause.stdout.contains("paused queue 'mail'"), "\(pause)")
            #expect(try await db.string("SELECT reason FROM worker.queue_pauses") == "it's; DROP TABLE worker.jobs --")
            let stats = try await runTool("workerctl", ["stats"], database: db)
            #expect(stats.stdout.split(separator: "\n").first { $0.hasPrefix("mail") }?.hasSuffix("paused") == true, "\(stats)")
            let pauses = try await runTool("workerctl", ["pauses"], database: db)
            let row = pauses.stdout.split(separator: "\n").first { $0.hasPrefix("mail ") }
            #expect(row?.hasSuffix("it's; DROP TABLE worker.jobs --") == true, "\(pauses)")

            let typo = try await runTool("workerctl", ["pause", "mial"], database: db)
            #expect(typo.status == 0 && typo.stdout.contains("has no jobs and no dead letters yet"), "\(typo)")

            let resume = try await runTool("workerctl", ["resume", "mail"], database: db)
            #expect(resume.status == 0 && resume.stdout.contains("resumed queue 'mail'"), "\(resume)")
            let left = try await runTool("workerctl", ["pauses", "--json"], database: db)
            let listed = try JSONSerialization.jsonObject(with: Data(left.stdout.utf8)) as? [[String: Any]]
            #expect(listed?.compactMap { $0["queue"] as? String } == ["mial"], "\(left)")
            let again = try await runTool("workerctl", ["resume", "mail"], database: db)
            #expect(again.status != 0 && again.stderr.contains("queue 'mail' is not paused"), "\(again)")
            let missing = try await runTool("workerctl", ["pause"], database: db)
            #expect(missing.status != 0 && missing.stderr.contains("Missing expected argument '<queue>'"), "\(missing)")
            let hostile = "x'; DROP TABLE worker.jobs; --"
            let odd = try await runTool("workerctl", ["pause", hostile], database: db)
            #expect(odd.status == 0 && odd.stdout.contains("paused queue '\(hostile)'"), "\(odd)")
            #expect(try await db.string("SELECT string_agg(queue, ',' ORDER BY queue) FROM worker.queue_pauses") == "mial,\(hostile)")
            #expect(try await db.jobCount() == 1)
        }
    }

    /// sql/016: the pause is checked once per claim, not at every priority level.
    @Test func aClaimOfAPausedQueueDoesNotVisitItsPriorityLevels() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO worker.jobs (kind, priority) SELECT 'noop', n FROM generate_series(-100, 100) AS n")
            try await db.execute("VACUUM ANALYZE worker.jobs")
            _ = try await QueuePauses(client: db.client, logger: db.logger).pause("default")
            // sql/014's claim visited all 201 levels, a statement and a probe each: 1,213 buffers.
            let buffers = try await db.claimBuffers(batch: 10)
            #expect(buffers < 20, "a claim of a paused queue read \(buffers) buffers")
            #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE attempts > 0") == 0)
        }
    }
}
