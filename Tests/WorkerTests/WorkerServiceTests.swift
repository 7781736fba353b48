import Foundation
import Logging
import PostgresNIO
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct WorkerServiceTests {
    @Test func aWorkerDrainsItsQueuesRunningEveryJobOnce() async throws {
        try await withTestDatabase(connections: 12) { db in
            let handler = RecordingHandler()
            _ = try await db.queue.enqueue(NewJob(queue: "a", kind: "test"), count: 300)
            _ = try await db.queue.enqueue(NewJob(queue: "b", kind: "test"), count: 200)
            let config = WorkerConfiguration(queues: ["a", "b"], concurrency: 4, batchSize: 10, workerID: "w")
            let totals = try await withWorker(db, .testing(handler), config) { _ in
                try await eventually("the queues to drain") { try await db.jobCount() == 0 }
            }
            #expect(totals.done == 500)
            #expect(handler.invocations.count == 500)
            #expect(Set(handler.invocations.map(\.id)).count == 500)
        }
    }

    @Test func aNotificationWakesAnIdleWorkerLongBeforeThePollInterval() async throws {
        try await withTestDatabase { db in
            let handler = RecordingHandler()
            let config = WorkerConfiguration(concurrency: 2, pollInterval: .seconds(3600), workerID: "w")
            try await withWorker(db, .testing(handler), config) { _ in
                // Let the lanes go idle first: their first claims find nothing.
                try await eventually("the listener to connect") {
                    try await db.listenerConnected()
                }
                // Within the suite's time limit, only the notification can wake it.
                try await db.queue.enqueue(NewJob(kind: "test"))
                try await eventually("the notified worker to run the job") { try await db.jobCount() == 0 }
            }
            #expect(handler.invocations.count == 1)
        }
    }

    @Test func theHeartbeatKeepsLeasesOfALongBatch() async throws {
        // A pool for both workers and the test: a heartbeat waiting for a
        // connection would let the leases lapse as surely as a missing one.
        let configA = WorkerConfiguration(
            concurrency: 1, batchSize: 2, visibilityTimeout: .seconds(5), pollInterval: .milliseconds(50), workerID: "A")
        try await withTestDatabase(connections: 2 * configA.connectionsNeeded + 2) { db in
            // The first job outlasts the visibility timeout two and a half times
            // by the database's clock; the second waits behind it in the same
            // batch. Without heartbeats, worker B would claim the second job again
            // after one timeout. (Leases of 1 s, 2 s and 3 s each lapsed once in CI
            // behind a beat the whole suite's load had stalled.)
            let handler = RecordingHandler { job, _ in
                guard job.payload.contains("slow") else { return }
                try await eventually("the lease to be outlasted") {
                    try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(job.id) AND now() > leased_at + interval '12.5 s'") == 1
                }
            }
            try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"slow":true}"#))
            let second = try await db.queue.enqueue(NewJob(kind: "test"))
            try await withWorker(db, .testing(handler), configA) { _ in
                try await eventually("A to claim both jobs") {
                    try await db.int("SELECT count(*)::int FROM worker.jobs WHERE leased_by = 'A'") == 2
                }
                var configB = configA
                configB.workerID = "B"
                try await withWorker(db, .testing(handler), configB) { _ in
                    try await eventually("both jobs to finish") { try await db.jobCount() == 0 }
                }
            }
            #expect(handler.invocations(of: second) == 1)
            #expect(handler.invocations.first { $0.id == second }?.attempts == 1)
        }
    }

    @Test func aWorkerSurvivesItsConnectionsBeingKilledAgainAndAgain() async throws {
        try await withTestDatabase { db in
            // The worker gets a pool of its own, named so that only its sessions are cut.
            var workerDatabase = db.config
            workerDatabase.applicationName = "worker under test"
            try await withPostgresClient(try workerDatabase.clientConfiguration(maximumConnections: 4), logger: db.logger) { client in
                let handler = RecordingHandler()
                let policy = RetryPolicy(base: .milliseconds(10), rate: 2, cap: .milliseconds(50), maxAttempts: 100, maxAge: nil)
                var config = WorkerConfiguration(concurrency: 2, batchSize: 5, visibilityTimeout: .seconds(5), workerID: "w")
                config.pollInterval = .milliseconds(20)
                let worker = Worker(client: client, configuration: config, handlers: .testing(handler, policy: policy), logger: db.logger)
                let running = Task { try await worker.run() }
                defer { worker.stop() }
                _ = try await db.queue.enqueue(NewJob(kind: "test"), count: 200)
                // As PostgreSQL restarts or network cuts would, mid-claim, mid-batch and mid-LISTEN.
                var cuts = 0
                for _ in 0..<20 {
                    cuts += try await db.int(
                        "SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE application_name = 'worker under test'")
                    try await Task.sleep(for: .milliseconds(30))
                }
                #expect(cuts > 0)
                _ = try await db.queue.enqueue(NewJob(kind: "test"), count: 20)
                try await eventually("every job after the cuts") { try await db.jobCount() == 0 }
                worker.stop()
                try await running.value
                #expect(try await db.deadCount() == 0)
                #expect(Set(handler.invocations.map(\.id)).count == 220)
            }
        }
    }

    @Test func stoppingFinishesTheJobAtHandAndReleasesTheRest() async throws {
        try await withTestDatabase { db in
            let started = Gate()
            let finish = Gate()
            let handler = RecordingHandler { job, _ in
                if job.payload.contains("first") {
                    started.open()
                    await finish.wait()
                }
            }
            let first = try await db.queue.enqueue(NewJob(kind: "test", payload: #"{"first":true}"#, priority: -1))
            _ = try await db.queue.enqueue(NewJob(kind: "test"), count: 4)
            let config = WorkerConfiguration(concurrency: 1, batchSize: 5, workerID: "w")
            let worker = Worker(client: db.client, configuration: config, handlers: .testing(handler), logger: db.logger)
            let running = Task { try await worker.run() }
            await started.wait()
            worker.stop()
            finish.open()
            try await running.value
            #expect(handler.invocations.map(\.id) == [first])
            #expect(worker.totals.done == 1 && worker.totals.released == 4)
            let ready = try await db.int(
                "SELECT count(*)::int FROM worker.jobs WHERE attempts = 0 AND lease_token IS NULL AND visible_at <= now()")
            #expect(ready == 4)
        }
    }
}
