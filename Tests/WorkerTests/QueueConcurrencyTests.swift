import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// `--queue-concurrency`: lanes of a queue's own, a bulkhead between queues.
@Suite(.timeLimit(.minutes(2))) struct QueueConcurrencyTests {
    @Test func lanesOfAQueuesOwnComeFirstAndTheOthersShareTheRest() {
        var configuration = WorkerConfiguration(queues: ["a", "b", "c"], concurrency: 2)
        #expect(configuration.lanes == [["a", "b", "c"], ["a", "b", "c"]])
        configuration.queueConcurrency = ["c": 1, "a": 2]
        #expect(configuration.lanes == [["a"], ["a"], ["c"], ["b"], ["b"]])
        #expect(configuration.connectionsNeeded == 5 + 8)
        configuration.queueConcurrency["b"] = 3
        #expect(configuration.lanes == [["a"], ["a"], ["b"], ["b"], ["b"], ["c"]], "--concurrency serves no queue")
    }

    /// Hanging jobs in a queue of their own hold its lanes and no more: the
    /// other queue's jobs are all done while they hang.
    @Test func aQueueOfHangingJobsCannotTakeTheOtherQueuesLanes() async throws {
        try await withTestDatabase { db in
            let release = Gate()
            let handler = RecordingHandler { job, _ in if job.queue == "slow" { await release.wait() } }
            // More than every lane of the worker: with shared lanes, they would hold them all.
            for _ in 0..<6 { _ = try await db.queue.enqueue(NewJob(queue: "slow", kind: "test")) }
            var configuration = WorkerConfiguration(
                queues: ["slow", "fast"], concurrency: 2, batchSize: 1, pollInterval: .milliseconds(50), workerID: "bulkhead")
            configuration.queueConcurrency = ["slow": 2]
            try await withWorker(db, .testing(handler), configuration) { _ in
                defer { release.open() }  // on failure too, or the worker's stop would wait for the hanging jobs
                try await eventually("both of the slow queue's lanes to hold a hanging job") {
                    handler.invocations.count { $0.queue == "slow" } == 2
                }
                for _ in 0..<20 { _ = try await db.queue.enqueue(NewJob(queue: "fast", kind: "test")) }
                try await eventually("the fast queue to drain while the slow jobs hang") {
                    try await db.int("SELECT count(*)::int FROM worker.jobs WHERE queue = 'fast'") == 0
                }
                #expect(handler.invocations.count { $0.queue == "slow" } == 2, "a slow job in a shared lane")
                release.open()
                try await eventually("the slow queue to drain") { try await db.jobCount() == 0 }
            }
            #expect(handler.invocations.count == 26)
        }
    }
}
