import Foundation
import PostgresNIO
import Synchronization
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// A link that goes silent (no FIN, no RST) leaves a statement in flight
/// waiting for TCP to give up, about 15 minutes. The worker must abandon the
/// batch on its own, and work again once the link is back.
@Suite(.timeLimit(.minutes(2))) struct SilentLinkTests {
    @Test func aWorkerAbandonsABatchStuckOnASilentLinkAndWorksAgainOnceItIsBack() async throws {
        try await withTestDatabase { db in
            let proxy = try await SilentLinkProxy(upstreamPort: try DatabaseConfig.parse(url: db.url).port)
            let database = try {
                var config = try DatabaseConfig.parse(url: db.url)
                config.port = proxy.port
                return config
            }()
            let handler = LinkCuttingHandler(proxy: proxy)
            let handlers = {
                var registry = HandlerRegistry()
                registry.register("cut", handler)
                return registry
            }()
            let job = try await db.queue.enqueue(NewJob(kind: "cut"))

            let configuration = {
                var configuration = WorkerConfiguration(
                    concurrency: 2, visibilityTimeout: .seconds(1), pollInterval: .milliseconds(100), workerID: "w")
                configuration.silenceTimeout = .seconds(2)
                return configuration
            }()
            try await withPostgresClient(try database.clientConfiguration(maximumConnections: 8), logger: db.logger) { client in
                let worker = Worker(client: client, configuration: configuration, handlers: handlers, logger: db.logger)
                let running = Task { try await worker.run() }
                defer { worker.stop() }

                // The handler cut the link under its own statement. The server keeps the
                // batch's transaction open (the proxy's side of the link is alive) until the
                // worker gives the batch up by closing its connection: within a few
                // visibility timeouts, not TCP's quarter of an hour.
                try await eventually("the handler to cut the link") { handler.calls == 1 }
                try await eventually(timeout: .seconds(20), "the stuck batch to be abandoned and rolled back") {
                    try await db.int("""
                        SELECT count(*)::int FROM pg_stat_activity
                        WHERE datname = current_database() AND state = 'idle in transaction'
                        """) == 0
                }
                #expect(worker.totals.batchErrors > 0)
                #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(job)") == 1)

                proxy.restore()
                try await eventually(timeout: .seconds(30), "the job to be done once the link is back") { try await db.jobCount() == 0 }
                #expect(handler.calls == 2)
                worker.stop()
                try await running.value
                #expect(worker.totals.done == 1)
            }
            await proxy.close()
        }
    }
}

/// After a partition heals, the server has dropped the sessions it cut off,
/// but the worker's end of those connections is never told: a batch waits for
/// an answer that cannot come while new connections (the heartbeat's) work, so
/// the silence timeout never runs out. The heartbeat finds the batch's session
/// gone from the server, and the batch is abandoned.
extension SilentLinkTests {
    @Test func aBatchWhoseSessionTheServerDroppedIsAbandonedWhileNewConnectionsWork() async throws {
        try await withTestDatabase { db in
            let proxy = try await SilentLinkProxy(upstreamPort: try DatabaseConfig.parse(url: db.url).port)
            let database = try {
                var config = try DatabaseConfig.parse(url: db.url)
                config.port = proxy.port
                return config
            }()
            let handler = FlowBreakingHandler(proxy: proxy)
            let handlers = {
                var registry = HandlerRegistry()
                registry.register("cut", handler)
                return registry
            }()
            try await db.queue.enqueue(NewJob(kind: "cut"))
            let configuration = {
                var configuration = WorkerConfiguration(
                    concurrency: 1, visibilityTimeout: .seconds(1), pollInterval: .milliseconds(100), workerID: "w")
                configuration.silenceTimeout = .seconds(120)  // out of the test's reach
                return configuration
            }()
            try await withPostgresClient(try database.clientConfiguration(maximumConnections: 8), logger: db.logger) { client in
                let worker = Worker(client: client, configuration: configuration, handlers: handlers, logger: db.logger)
                let running = Task { try await worker.run() }
                defer { worker.stop() }

                try await eventually("the handler to break the open flows") { handler.session != nil }
                // What the server's keepalives do to a session cut off by a partition.
                try await db.execute("SELECT pg_terminate_backend(\(handler.session ?? 0))")
                try await eventually(timeout: .seconds(20), "the job to be done again on a new session") {
                    try await db.jobCount() == 0
                }
                #expect(handler.calls == 2)
                #expect(worker.totals.batchErrors >= 1)
                worker.stop()
                try await running.value
            }
            await proxy.close()
        }
    }
}

/// On its first call, learns its session, breaks the open flows and then
/// waits on a statement over its (now dead) connection.
final class FlowBreakingHandler: JobHandler, Sendable {
    let proxy: SilentLinkProxy
    private let state = Mutex<(calls: Int, session: Int32?)>((0, nil))
    var calls: Int { state.withLock { $0.calls } }
    var session: Int32? { state.withLock { $0.session } }
    var idempotencyTTL: Duration? { nil }

    init(proxy: SilentLinkProxy) { self.proxy = proxy }

    func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        guard state.withLock({ $0.calls += 1; return $0.calls }) == 1 else { return .empty }
        var pid: Int32 = 0
        for try await value in try await context.connection.query("SELECT pg_backend_pid()", logger: context.logger)
            .decode(Int32.self) { pid = value }
        proxy.breakOpenFlows()
        state.withLock { $0.session = pid }
        try await context.connection.query("SELECT 1", logger: context.logger)
        return .empty
    }
}

/// On its first call, cuts the link and then runs a statement over it, in the
/// batch's transaction, as a job whose host lost its network mid-batch.
final class LinkCuttingHandler: JobHandler, Sendable {
    let proxy: SilentLinkProxy
    private let count = Mutex(0)
    var calls: Int { count.withLock { $0 } }
    var idempotencyTTL: Duration? { nil }

    init(proxy: SilentLinkProxy) { self.proxy = proxy }

    func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        if count.withLock({ $0 += 1; return $0 }) == 1 { proxy.goSilent() }
        try await context.connection.query("SELECT 1", logger: context.logger)
        return .empty
    }
}
