import Foundation
import PostgresNIO
import Testing
import WorkerEngine
@testable import WorkerRuntime
import WorkerTestSupport

/// `worker.workers` and `workerctl workers`: the fleet as an operator sees it.
@Suite(.timeLimit(.minutes(2))) struct WorkerRegistryTests {
    /// A report of the process `pid` on `host`: one instance per pair.
    func report(
        _ id: String, host: String = "h1", pid: Int = 1, leases: Int = 0, finished: Int = 0, stopping: Bool = false
    ) -> WorkerReport {
        let instance = UUID(uuidString: String(format: "00000000-0000-0000-%04d-%012d", host.count, pid))!
        return WorkerReport(
            workerID: id, instance: instance, host: host, pid: pid, queues: ["a", "b"], concurrency: 4, batchSize: 20,
            leases: leases, finished: finished, stopping: stopping)
    }

    @Test func aWorkerReportsItselfWhenItStartsShowsItsStopAtOnceAndRemovesItselfWhenStopped() async throws {
        try await withTestDatabase { db in
            let registry = WorkerRegistry(client: db.client, logger: db.logger)
            let (started, release) = (Gate(), Gate())
            let handler = RecordingHandler { _, _ in
                started.open()
                await release.wait()
            }
            _ = try await db.queue.enqueue(NewJob(queue: "mail", kind: "test"))
            var config = WorkerConfiguration(queues: ["mail", "sms"], concurrency: 2, workerID: "w-1")
            config.presenceInterval = .seconds(3600)  // after the first, only the stop's own report comes in time
            try await withWorker(db, .testing(handler), config) { worker in
                defer { release.open() }  // the job at hand finishes, and the worker stops
                try await eventually("the worker's first report") { try await !registry.list().isEmpty }
                let listed = try await registry.list()
                #expect(listed.map(\.id) == ["w-1"])
                #expect(listed.first?.queues == ["mail", "sms"] && listed.first?.concurrency == 2)
                #expect(listed.first?.pid == Int(ProcessInfo.processInfo.processIdentifier))
                #expect(listed.first?.version == ProductVersion.number)
                #expect(listed.first?.state == .running && listed.first?.stoppingSince == nil)

                await started.wait()
                worker.stop()
                // The stop is reported when it begins, not at the next report an hour away.
                try await eventually("the stop to be reported") {
                    try await registry.list().first?.state == .stopping
                }
                #expect(try await registry.list().first?.leases == 1, "the job it finishes")
            }
            #expect(try await registry.list().isEmpty, "a stopped worker leaves no row")
            #expect(try await db.jobCount() == 0, "it finished its job")
        }
    }

    @Test func aReportKeepsTheStartAndMarksTheStopOnce() async throws {
        try await withTestDatabase { db in
            let registry = WorkerRegistry(client: db.client, logger: db.logger)
            try await registry.report(report("w", leases: 3))
            try await db.execute("UPDATE worker.workers SET started_at = now() - interval '1 hour', seen_at = now() - interval '1 hour'")
            try await registry.report(report("w", leases: 7, finished: 12))
            var worker = try #require(try await registry.list().first)
            #expect(worker.leases == 7 && worker.finished == 12 && worker.state == .running)
            #expect(worker.startedAt < worker.seenAt.addingTimeInterval(-3000), "the same process keeps its start")
            #expect(worker.silentSeconds < 600, "seen again now, not an hour ago")

            try await registry.report(report("w", stopping: true))
            let stopping = try #require(try await registry.list().first?.stoppingSince)
            try await registry.report(report("w", stopping: true))
            worker = try #require(try await registry.list().first)
            #expect(worker.state == .stopping && worker.stoppingSince == stopping, "the stop began once")

            try await registry.report(report("w", pid: 2))
            worker = try #require(try await registry.list().first)
            #expect(worker.state == .running && worker.startedAt > worker.seenAt.addingTimeInterval(-60),
                    "a new process under the id starts anew: \(worker)")
        }
    }

    @Test func aSilentWorkerIsShownGoneAndDeletedAfterADay() async throws {
        try await withTestDatabase { db in
            let registry = WorkerRegistry(client: db.client, logger: db.logger)
            try await registry.report(report("alive"))
            try await registry.report(report("killed"))
            try await registry.report(report("long-gone"))
            try await db.execute("UPDATE worker.workers SET seen_at = now() - interval '31 seconds' WHERE id = 'killed'")
            try await db.execute("UPDATE worker.workers SET seen_at = now() - interval '25 hours' WHERE id = 'long-gone'")
            try await db.execute(
                """
                INSERT INTO worker.throughput (bucket, worker_id, queue, kind, done, duplicates, rejected, dead_lettered, retried)
                VALUES (now() - interval '20 seconds', 'alive', 'a', 'k', 5, 1, 1, 1, 50), (now(), 'alive', 'b', 'k', 3, 0, 0, 0, 0),
                       (now() - interval '2 minutes', 'alive', 'a', 'k', 100, 0, 0, 0, 0), (now(), 'killed', 'a', 'k', 1, 0, 0, 0, 0)
                """)
            var listed = try await registry.list()
            #expect(listed.map(\.id) == ["alive", "killed", "long-gone"], "running first, then gone")
            #expect(listed.map(\.state) == [.running, .gone, .gone])
            #expect(listed.map(\.doneLastMinute) == [11, 1, 0], "finished in the last minute, as stats counts it (not retried)")

            try await registry.report(report("alive"))
            listed = try await registry.list()
            #expect(listed.map(\.id) == ["alive", "killed"], "a report deletes rows unseen for a day")

            let table = try await runTool("workerctl", ["workers"], database: db)
            let lines = table.stdout.split(separator: "\n")
            #expect(table.status == 0 && lines.count == 3, "\(table)")
            #expect(lines.first?.hasPrefix("WORKER") == true && lines.last?.hasSuffix("gone") == true, "\(table)")
            let json = try await runTool("workerctl", ["workers", "--json"], database: db)
            let workers = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]], "\(json)")
            #expect(workers.compactMap { $0["id"] as? String } == ["alive", "killed"])
            #expect(workers.first?["queues"] as? [String] == ["a", "b"] && workers.first?["done_last_minute"] as? Int == 11)
        }
    }

    /// A rolling deploy: which workers run which release, and those from before the column.
    @Test func eachWorkersReleaseIsShownAndBothToolsPrintTheirOwn() async throws {
        try await withTestDatabase { db in
            let registry = WorkerRegistry(client: db.client, logger: db.logger)
            var old = report("old", pid: 1)
            old.version = "0.0.9"
            try await registry.report(old)
            try await registry.report(report("new", pid: 2))
            try await db.execute("INSERT INTO worker.workers (id, instance, host, pid, queues, concurrency, batch_size) VALUES ('older', gen_random_uuid(), 'h', 3, '{a}', 1, 1)")
            let listed = try await registry.list()
            #expect(listed.map(\.id) == ["new", "old", "older"] && listed.map(\.version) == [ProductVersion.number, "0.0.9", nil])
            let table = try await runTool("workerctl", ["workers"], database: db)
            let versions = table.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true)[3] }
            #expect(versions == [Substring(ProductVersion.number), "0.0.9", "-"], "\(table)")
        }
        for tool in ["workerctl", "workerd"] {
            let printed = await (try ToolProcess(tool, ["--version"])).result()
            #expect(printed.status == 0 && printed.stdout == "\(ProductVersion.number) (schema \(Migrator.requiredVersion))\n", "\(printed)")
        }
    }

    @Test func twoLiveProcessesUnderOneWorkerIDAreNoticed() async throws {
        try await withTestDatabase { db in
            let registry = WorkerRegistry(client: db.client, logger: db.logger)
            #expect(try await registry.report(report("w", host: "h1", pid: 10)) == nil)
            #expect(try await registry.report(report("w", host: "h1", pid: 10)) == nil, "its own row")
            #expect(try await registry.report(report("w", host: "h2", pid: 20)) == .init(host: "h1", pid: 10))
            #expect(try await registry.report(report("w", host: "h1", pid: 10)) == .init(host: "h2", pid: 20))

            // A successor after a stop, or after the last one went silent, is no clash.
            try await registry.report(report("w", host: "h1", pid: 10, stopping: true))
            #expect(try await registry.report(report("w", host: "h1", pid: 11)) == nil)
            try await db.execute("UPDATE worker.workers SET seen_at = now() - interval '31 seconds'")
            #expect(try await registry.report(report("w", host: "h1", pid: 12)) == nil)

            // A stopping instance removes its own row only, not its successor's.
            try await registry.remove(workerID: "w", instance: report("w", host: "h1", pid: 11).instance)
            #expect(try await registry.list().map(\.pid) == [12])
            try await registry.remove(workerID: "w", instance: report("w", host: "h1", pid: 12).instance)
            #expect(try await registry.list().isEmpty)
        }
    }

    @Test func aPredecessorThatDiedOnThisHostIsNoClash() async throws {
        let exited = try ToolProcess("workerctl", ["--help"])
        _ = await exited.result()
        let me = report("w", host: PresenceReporter.hostName, pid: Int(ProcessInfo.processInfo.processIdentifier))
        let dead = WorkerRegistry.Process(host: me.host, pid: Int(exited.pid))
        #expect(!PresenceReporter.isAlive(dead, besides: me), "systemd restarted a crashed worker under its id")
        #expect(PresenceReporter.isAlive(.init(host: me.host, pid: Int(getppid())), besides: me))
        #expect(PresenceReporter.isAlive(.init(host: "elsewhere", pid: Int(exited.pid)), besides: me))
        #expect(!PresenceReporter.isAlive(.init(host: me.host, pid: me.pid), besides: me), "a restarted container's pid 1")
    }
}
