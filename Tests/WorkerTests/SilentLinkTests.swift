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
            let job = try await db.queue.enqueue(NewJob(kind: "cut"))
            let totals = try await runWorkerBehindProxy(
                db, concurrency: 2, silenceTimeout: .seconds(2), handler: LinkCuttingHandler.init
            ) { proxy, worker, handler in
                // The handler cut the link under its own statement. The server keeps the
                // batch's transaction open (the proxy's side of the link is alive) until the
                // worker gives the batch up by closing its connection: within a few
                // visibility timeouts, not TCP's quarter of an hour.
                try await eventually("the handler to cut the link") { handler.calls == 1 }
                try await eventually("the stuck batch to be abandoned and rolled back") {
                    try await db.int("""
                        SELECT count(*)::int FROM pg_stat_activity
                        WHERE datname = current_database() AND state = 'idle in transaction'
                        """) == 0
                }
                #expect(worker.totals.batchErrors > 0)
                #expect(try await db.int("SELECT count(*)::int FROM worker.jobs WHERE id = \(job)") == 1)

                proxy.restore()
                try await eventually(timeout: .seconds(30), "the job to be done once the link is back") { try await db.jobCount() == 0 }
                // At least once more: under a loaded suite its 1 s lease may run out mid-attempt and
                // the other lane run it a third time (one of the two then loses its lease).
                #expect(handler.calls >= 2)
            }
            #expect(totals.done == 1)
        }
    }

    /// Runs a worker (1 s visibility timeout) whose connections go through a
    /// `SilentLinkProxy`, with `handler` for kind `cut`, while `body` runs;
    /// then stops it and returns its totals.
    func runWorkerBehindProxy<Handler: JobHandler>(
        _ db: TestDatabase, concurrency: Int, silenceTimeout: Duration,
        handler makeHandler: (SilentLinkProxy) -> Handler,
        _ body: @escaping @Sendable (SilentLinkProxy, Worker, Handler) async throws -> Void
    ) async throws -> WorkerTotals {
        let proxy = try await SilentLinkProxy(upstreamPort: try DatabaseConfig.parse(url: db.url).port)
        var database = try DatabaseConfig.parse(url: db.url)
        database.port = proxy.port
        let handler = makeHandler(proxy)
        var handlers = HandlerRegistry()
        handlers.register("cut", handler)
        var configuration = WorkerConfiguration(
            concurrency: concurrency, visibilityTimeout: .seconds(1), pollInterval: .milliseconds(100), workerID: "w")
        configuration.silenceTimeout = silenceTimeout
        let totals: WorkerTotals
        do {
            totals = try await withPostgresClient(
                try database.workerClientConfiguration(connections: configuration.connectionsNeeded), logger: db.logger) {
                [handlers, configuration] client in
                let worker = Worker(client: client, configuration: configuration, handlers: handlers, logger: db.logger)
                let running = Task { try await worker.run() }
                defer { worker.stop() }
                try await body(proxy, worker, handler)
                worker.stop()
                try await running.value
                return worker.totals
            }
        } catch {
            await proxy.close()
            throw error
        }
        await proxy.close()
        return totals
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
            try await db.queue.enqueue(NewJob(kind: "cut"))
            _ = try await runWorkerBehindProxy(
                db, concurrency: 1, silenceTimeout: .seconds(120),  // out of the test's reach
                handler: FlowBreakingHandler.init
            ) { _, worker, handler in
                try await eventually("the handler to break the open flows") { handler.session != nil }
                // What the server's keepalives do to a session cut off by a partition.
                try await db.execute("SELECT pg_terminate_backend(\(handler.session ?? 0))")
                try await eventually(timeout: .seconds(60), "the job to be done again on a new session") {
                    try await db.jobCount() == 0
                }
                #expect(handler.calls == 2)
                #expect(worker.totals.batchErrors >= 1)
            }
        }
    }
}

/// The worker's last throughput write runs after its lanes stopped, and
/// nothing cancels it: over a pooled connection whose link died silently it
/// must give up on its own, or the worker's stop waits for TCP.
extension SilentLinkTests {
    @Test func aWorkerStopsWhenTheLinksOfItsPooledConnectionsDiedSilently() async throws {
        try await withTestDatabase { db in
            try await db.queue.enqueue(NewJob(kind: "cut"))
            let broken = Mutex<ContinuousClock.Instant?>(nil)
            _ = try await runWorkerBehindProxy(
                db, concurrency: 1, silenceTimeout: .seconds(120), handler: { _ in RecordingHandler() }
            ) { proxy, worker, _ in
                // Done as the worker counts it: the server's answer to the commit
                // has come back (flows broken before it would leave the batch waiting).
                try await eventually("the job to be done") { worker.totals.done == 1 }
                proxy.breakOpenFlows()
                broken.withLock { $0 = .now }
            }
            let brokeAt = try #require(broken.withLock { $0 })
            // The statement deadline is the visibility timeout here: 1 s.
            #expect(ContinuousClock.now - brokeAt < .seconds(60), "not TCP's quarter of an hour")
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
