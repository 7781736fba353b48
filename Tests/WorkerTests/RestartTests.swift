import Foundation
import Testing
import WorkerEngine
import WorkerTestSupport

/// PostgreSQL restarts under a running `workerd`. The server is a private
/// cluster of this test (restarting the shared one would disturb other tests).
@Suite(.timeLimit(.minutes(3))) struct RestartTests {
    @Test func workerdCarriesOnThroughRestartsAndAnOutageAndLosesNoJob() async throws {
        try await withPrivateCluster { cluster in try await runThroughRestarts(url: cluster.url, dir: cluster.directory) }
    }

    /// Enqueues with a fresh workerctl, whose connection no restart has cut; returns the ids.
    static func enqueue(_ count: Int, env: [String: String]) async throws -> ClosedRange<Int64> {
        let result = try await runTool("workerctl", [
            "enqueue", "--kind", "demo.task", "--payload", #"{"work_ms": 10}"#, "--count", "\(count)",
        ], environment: env)
        // "enqueued 400 jobs, ids 1 to 400"
        let words = result.stdout.split(whereSeparator: \.isWhitespace)
        guard result.status == 0, words.count == 7, let first = Int64(words[4]), let last = Int64(words[6]) else {
            throw DatabaseTestError(detail: "enqueue failed: \(result)")
        }
        return first...last
    }

    func runThroughRestarts(url: String, dir: String) async throws {
        let env = ["DATABASE_URL": url]
        // Ten lanes, so that they ask the pool for more connections than it
        // has idle: with a minimum of connections kept open, postgres-nio 1.33's
        // pool then crashed workerd after a restart (four lanes never did).
        let workerd = try ToolProcess("workerd", [
            "--migrate", "--sql-dir", repositorySQLDirectory.path, "--worker-id", "restart", "--concurrency", "10",
            "--batch-size", "10", "--visibility-timeout", "5s", "--poll-interval", "200ms", "--log-level", "debug",
        ], environment: env)
        let config = try DatabaseConfig.parse(url: url)
        let enqueued: [ClosedRange<Int64>]
        do {
            enqueued = try await enqueueThroughRestarts(config: config, env: env, dir: dir)
        } catch {
            // A crash report starts with its reason; anything else ends with it.
            let log = workerd.stderrSoFar
            let shown = log.range(of: "*** Program crashed").map { String(log[$0.lowerBound...].prefix(4000)) }
                ?? String(log.suffix(6000))
            Issue.record("workerd's log until then: \(shown)")
            throw error
        }

        workerd.send(SIGTERM)
        let result = await workerd.result()
        #expect(result.status == 0, "\(result.stderr.suffix(2000))")
        // Every job was acked at least once; one whose commit a restart cut ran again.
        let done = Set(result.stderr.split(separator: "\n").filter { $0.hasSuffix("job done") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("job_id=") }.flatMap { Int64($0.dropFirst(7)) }
        })
        let lost = enqueued.flatMap { Array($0) }.filter { !done.contains($0) }
        #expect(enqueued.map(\.count).reduce(0, +) == 800)
        #expect(lost.isEmpty, "jobs never done: \(lost.prefix(20))")
    }

    /// Enqueues 800 jobs in four parts around a fast restart, an immediate
    /// one and an outage of 3 s, waits until none is left and returns their ids.
    func enqueueThroughRestarts(config: DatabaseConfig, env: [String: String], dir: String) async throws -> [ClosedRange<Int64>] {
        try await withPostgresClient(try config.clientConfiguration(maximumConnections: 2), logger: makeTestLogger()) { client in
            var enqueued: [ClosedRange<Int64>] = []
            let queue = JobQueue(client: client, logger: makeTestLogger())
            // Errors while the server is down count as "not yet".
            func waiting() async -> Int? { try? await queue.waitingCount() }

            try await eventually("workerd to migrate") {
                (try? await Migrator(client: client, logger: makeTestLogger()).currentVersion()) == Migrator.requiredVersion
            }
            enqueued.append(try await Self.enqueue(400, env: env))
            try await eventually("work to start") { (await waiting() ?? 400) < 350 }
            let fast = try await runScript("pg", ["restart", dir, "fast"])
            #expect(fast.status == 0, "\(fast)")

            enqueued.append(try await Self.enqueue(200, env: env))
            try await eventually("work to go on after the fast restart") { (await waiting() ?? 600) < 150 }
            let immediate = try await runScript("pg", ["restart", dir, "immediate"])
            #expect(immediate.status == 0, "\(immediate)")

            enqueued.append(try await Self.enqueue(100, env: env))
            try await eventually("work to go on after the immediate restart") { (await waiting() ?? 100) < 100 }
            // An outage: the lanes ask the pool for connections while the server
            // refuses them.
            let outage = try await runScript("pg", ["restart", dir, "fast", "--down", "3"])
            #expect(outage.status == 0, "\(outage)")

            enqueued.append(try await Self.enqueue(100, env: env))
            try await eventually(timeout: .seconds(60), "every job to be done") { await waiting() == 0 }
            #expect(try await queue.deadLetterCount() == 0)
            return enqueued
        }
    }
}

extension JobQueue {
    fileprivate func waitingCount() async throws -> Int {
        try await client.withLiveConnection { connection in
            for try await count in try await connection.query("SELECT count(*)::int FROM worker.jobs", logger: logger).decode(Int.self) {
                return count
            }
            return -1
        }
    }

    fileprivate func deadLetterCount() async throws -> Int {
        try await client.withLiveConnection { connection in
            for try await count in try await connection.query("SELECT count(*)::int FROM worker.dead_letters", logger: logger).decode(Int.self) {
                return count
            }
            return -1
        }
    }
}
