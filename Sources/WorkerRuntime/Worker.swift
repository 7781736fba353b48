import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization
import WorkerEngine

/// The worker of `workerd`: lanes (`WorkerConfiguration.lanes`) that each
/// claim a batch from their queues, process it in one transaction and claim
/// again; idle lanes sleep until a NOTIFY or the poll interval wakes them. On
/// graceful shutdown the lanes stop claiming, finish the job at hand and
/// release the rest of their batch.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let client: PostgresClient
    private let queue: JobQueue
    private let processor: BatchProcessor
    private let logger: Logger
    private let wake = WakeSignal()
    /// Closed when a stop begins, for the presence report (never signalled).
    private let stopBegan = WakeSignal()
    /// This run of the worker in `worker.workers`.
    private let instance = UUID()
    private let leases = LeaseRegistry()
    private let counters = WorkerCounters()
    private let stopping = Atomic<Bool>(false)
    private let monitor = LaneMonitor()
    private let contact = DatabaseContact()
    private let sessions = BatchSessions()
    private let cancelNotes = CancelledJobs()
    private let ticker: DeadlineTicker

    public init(client: PostgresClient, configuration: WorkerConfiguration, handlers: HandlerRegistry, logger: Logger) {
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.workerID)"
        self.configuration = configuration
        self.client = client
        self.logger = logger
        // A batch's deadlines are noticed at most a tenth of the shorter one, and a second, late.
        self.ticker = DeadlineTicker(period: max(.milliseconds(10), min(.seconds(1), configuration.statementDeadline / 10)))
        self.queue = JobQueue(client: client, logger: logger)
        self.processor = BatchProcessor(
            client: client, handlers: handlers, workerID: configuration.workerID, logger: logger)
    }

    public var totals: WorkerTotals { counters.snapshot }

    /// Leases held right now: jobs claimed and not yet finished.
    public var leasesHeld: Int { leases.all.count }

    /// Lanes whose claim statement has run longer than `limit`: a stuck claim
    /// loop, for the systemd watchdog.
    public func stuckLanes(after limit: Duration) -> [Int] { monitor.stuck(after: limit) }

    /// Asks the lanes to stop as a graceful shutdown does.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        wake.close()
        stopBegan.close()
    }

    private var isStopping: Bool { stopping.load(ordering: .acquiring) }

    public func run() async throws {
        var starting: Logger.Metadata = [
            "version": "\(ProductVersion.number)", "queues": "\(configuration.queues.joined(separator: ","))",
            "lanes": "\(configuration.lanes.count)", "batch_size": "\(configuration.batchSize)",
        ]
        if !configuration.queueConcurrency.isEmpty {
            let reserved = configuration.queueConcurrency.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            starting["queue_concurrency"] = "\(reserved.joined(separator: ","))"
        }
        logger.info("worker starting", metadata: starting)
        let presence = PresenceReporter(
            registry: WorkerRegistry(client: client, logger: logger), interval: configuration.presenceInterval,
            deadline: configuration.statementDeadline, logger: logger
        ) { [self] in
            WorkerReport(
                workerID: configuration.workerID, instance: instance, host: PresenceReporter.hostName,
                pid: Int(ProcessInfo.processInfo.processIdentifier), queues: configuration.queues,
                concurrency: configuration.lanes.count, batchSize: configuration.batchSize, leases: leasesHeld,
                finished: totals.finished, stopping: isStopping)
        }
        let reporter = ThroughputReporter(
            throughput: Throughput(client: client, logger: logger), counters: counters,
            workerID: configuration.workerID, interval: .seconds(10),
            deadline: configuration.statementDeadline, logger: logger)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                let listener = NotificationListener(
                    client: client, queues: Set(configuration.queues), wake: wake, logger: logger,
                    cancelRequested: { await self.cancelRequested($0) })
                let heartbeat = LeaseHeartbeat(
                    queue: queue, leases: leases, contact: contact, sessions: sessions, configuration: configuration,
                    logger: logger)
                background.addTask { await self.ticker.run() }
                background.addTask { await listener.run() }
                background.addTask { await heartbeat.run() }
                background.addTask { await reporter.run() }
                background.addTask { await presence.run(reportingAtOnce: self.stopBegan) }
                // Not the statement deadline, which the visibility timeout can make a second or two:
                // a look is bound to no lease, and one given up closes a pooled connection.
                let schedules = ScheduleLoop(
                    schedules: Schedules(client: client, logger: logger), interval: .seconds(1),
                    deadline: configuration.silenceTimeout, logger: logger)
                background.addTask { await schedules.run() }
                let orderingKeys = OrderingKeyLoop(
                    keys: OrderingKeys(client: client, logger: logger), interval: .seconds(1),
                    deadline: configuration.silenceTimeout, logger: logger)
                background.addTask { await orderingKeys.run() }
                if let interval = configuration.metricsInterval {
                    let sampler = MetricsSampler(worker: self, client: client, interval: interval, logger: logger)
                    background.addTask { await sampler.run() }
                }
                if let interval = configuration.sweepInterval {
                    let sweep = IdempotencySweepLoop(
                        sweeper: IdempotencySweeper(client: client, logger: logger), interval: interval, logger: logger)
                    background.addTask { await sweep.run() }
                }

                await withTaskGroup(of: Void.self) { lanes in
                    for (lane, queues) in configuration.lanes.enumerated() {
                        lanes.addTask { await self.runLane(lane, serving: queues) }
                    }
                }
                // The heartbeat outlives the lanes so that a slow last batch keeps its leases.
                stopBegan.close()  // lanes that stopped on cancellation: the report's wait ends too
                background.cancelAll()
            }
            // After the group, so that no report still in flight writes the row back; uncancelled,
            // so that a stop cancelled past its timeout still writes both, each within its deadline.
            await uncancelled {
                await reporter.flush()
                await presence.remove()
            }
        } onGracefulShutdown: {
            self.stop()
        }
        logger.info("worker stopped", metadata: ["totals": "\(counters.snapshot)"])
    }

    private func runLane(_ lane: Int, serving queues: [String]) async {
        var turn = lane % queues.count
        var backoff = Backoff()
        // A cancelled lane stops too: its statements now fail at once on
        // cancellation, so looping on would spin.
        while !isStopping && !Task.isCancelled {
            let generation: UInt64
            do {
                (generation, turn) = try await runBatches(lane: lane, serving: queues, from: turn)
                backoff.reset()
            } catch let timedOut as AttemptTimedOut {
                await settle(timedOut, lane: lane)
                continue
            } catch let cancelled as JobsCancelled {
                await settle(cancelled, lane: lane)
                continue
            } catch {
                counters.batchFailed()
                let delay = backoff.next()
                logger.error("batch failed; its jobs return when their leases expire", metadata: [
                    "lane": "\(lane)", "error": "\(String(reflecting: error))", "retry_in_ms": "\(delay.milliseconds)",
                ])
                try? await Task.sleep(for: delay)
                continue
            }
            // A notification that came since `generation` ends the wait at once.
            // The poll interval on average, drawn from 0.75 to 1.25 of it: lanes that
            // began together (one workerd's, a fleet restarted at once) would
            // otherwise look at the same instants, and the first of them take a
            // rate-limited queue's tokens from all the others, poll after poll.
            await wake.wait(since: generation, upTo: configuration.pollInterval * Double.random(in: 0.75...1.25))
        }
    }

    /// Claims and processes batches, a round over the queues at a time, while
    /// some batch comes back full; returns the wake generation read before the
    /// last round and the queue whose turn is next.
    ///
    /// The rounds share one pooled connection and one deadline watch, whose
    /// deadline follows the lane's step (see `deadline(of:)`): two leases of
    /// a connection and two watches per batch cost workerd about a sixth of
    /// its CPU time in a no-op drain.
    private func runBatches(lane: Int, serving queues: [String], from turn: Int) async throws -> (generation: UInt64, turn: Int) {
        let batchSize = configuration.batchSize
        monitor.claiming(lane)
        defer { monitor.idle(lane) }
        return try await withDeadline({ self.deadline(of: lane) }, ticker: ticker, orElse: { self.exceeded(lane) }) {
            try await self.client.withConnection { connection in
                var turn = turn
                while true {
                    let generation = self.wake.generation
                    // Only a full batch says more may wait; after smaller ones the
                    // lane waits (an empty claim after each batch doubled the claims).
                    var sawFullBatch = false
                    for step in 0..<queues.count where !self.isStopping {
                        let name = queues[(turn + step) % queues.count]
                        if try await self.runBatch(from: name, lane: lane, on: connection) == batchSize { sawFullBatch = true }
                    }
                    turn = (turn + 1) % queues.count
                    if !sawFullBatch || self.isStopping { return (generation, turn) }
                }
            }
        }
    }

    /// A claim (and the wait for its connection) may take the statement
    /// deadline; a batch may run as long as its handlers need while the
    /// heartbeat hears from the database and finds the batch's session on the
    /// server, each attempt within its kind's timeout; an attempt an operator
    /// cancelled is past its deadline now.
    private func deadline(of lane: Int) -> ContinuousClock.Instant {
        switch monitor.step(of: lane) {
        case .claiming(let since):
            return since + configuration.statementDeadline
        case .processing(let batch):
            if let attempt = batch.attempt, attempt.jobs.contains(where: { cancelNotes.note(for: $0) != nil }) { return .now }
            let heard = sessions.isGone(lane: lane) ? .now : contact.lastHeard + configuration.silenceTimeout
            guard let timesOut = batch.attempt?.deadline else { return heard }
            return min(heard, timesOut)
        case nil:
            return .now + configuration.statementDeadline
        }
    }

    private func exceeded(_ lane: Int) -> any Error {
        guard case .processing(let batch) = monitor.step(of: lane) else {
            return DeadlineExceeded(operation: "claim", reason: "no answer from the database in time for the leases to be of use")
        }
        // One look at the batch: the deadline was read from another, and the
        // attempt it saw may have ended since.
        let now = ContinuousClock.now
        let gone = sessions.isGone(lane: lane)
        let notes = cancelNotes.notes(of: batch.jobs)
        if !gone, let attempt = batch.attempt, let timeout = attempt.timeout, let timesOut = attempt.deadline,
           now >= timesOut, !attempt.jobs.contains(where: { notes[$0.id] != nil }) {
            return AttemptTimedOut(jobs: attempt.jobs, timeout: timeout, batch: batch.jobs, ended: batch.ended)
        }
        // With its session there and the database heard from, only an operator's cancel ends a batch:
        // of the attempt running, or of one that ended since the deadline was read.
        if !gone, now < contact.lastHeard + configuration.silenceTimeout, !notes.isEmpty {
            let ended = Set(batch.ended.map(\.jobID))
            let stopped = batch.jobs.filter { notes[$0.id] != nil && !ended.contains($0.id) }
            return JobsCancelled(jobs: stopped, notes: notes, batch: batch.jobs, ended: batch.ended)
        }
        return DeadlineExceeded(
            operation: "batch",
            reason: sessions.isGone(lane: lane)
                ? "the database dropped its session (a cut link); its jobs return when their leases expire"
                : "no answer from the database within the silence timeout; its jobs return when their leases expire")
    }

    /// Claims and processes one batch on `connection`; returns how many jobs it claimed.
    private func runBatch(from name: String, lane: Int, on connection: PostgresConnection) async throws -> Int {
        monitor.claiming(lane)
        let jobs = try await queue.claim(
            queue: name, limit: configuration.batchSize, visibilityTimeout: configuration.visibilityTimeout,
            workerID: configuration.workerID, payloadLimit: processor.handlers.maxPayloadBytes, on: connection)
        contact.heard()
        let batch = monitor.processing(lane, batch: jobs)
        guard !jobs.isEmpty else { return 0 }
        // A full batch says more may wait: another lane comes to help.
        if jobs.count == configuration.batchSize { wake.signal() }
        counters.claimed(jobs.count, from: name)
        let held = jobs.map(\.lease)
        leases.add(held)
        defer { cancelNotes.remove(jobs) }
        defer { leases.remove(held) }
        defer { sessions.ended(lane: lane) }
        let outcomes = try await process(jobs, of: batch, lane: lane, on: connection)
        counters.record(outcomes, of: jobs)
        return jobs.count
    }

    /// Processes a claimed batch; when the database refuses one of its
    /// statements for something a job holds (see `RefusedStatement`), runs
    /// its jobs again one at a time, so that only the jobs refused alone fail.
    private func process(_ jobs: [Job], of batch: UInt64, lane: Int, on connection: PostgresConnection) async throws -> [JobOutcome] {
        func run(_ jobs: [Job]) async throws -> [JobOutcome] {
            try await processor.process(
                jobs, on: connection, shouldStart: { !self.isStopping }, inSession: { self.sessions.began(lane: lane, pid: $0) },
                attemptStarted: { self.monitor.attemptStarted(lane, batch: batch, jobs: $0, timeout: $1) },
                attemptEnded: { self.monitor.attemptEnded(lane, batch: batch) },
                ended: { self.monitor.ended(lane, batch: batch, $0) },
                cancelNote: { self.cancelNotes.note(for: $0) })
        }
        var outcomes: [JobOutcome] = []
        var refused: [(job: Job, refusal: RefusedStatement)] = []
        do {
            return try await run(jobs)
        } catch {
            guard let refusal = RefusedStatement(error) else { throw error }
            monitor.attemptEnded(lane, batch: batch)  // an attempt the refusal cut short is over
            if jobs.count == 1 {
                refused = [(jobs[0], refusal)]
            } else {
                logger.warning("the database refused a statement of the batch; its jobs run again one at a time", metadata: [
                    "lane": "\(lane)", "job_ids": "\(jobs.map(\.id))", "error": "\(refusal)",
                ])
                for job in jobs {
                    do {
                        outcomes += try await run([job])
                    } catch {
                        guard let alone = RefusedStatement(error) else { throw error }
                        monitor.attemptEnded(lane, batch: batch)
                        refused.append((job, alone))
                    }
                }
            }
        }
        // Refused while a batch-mate got through, the job holds the cause:
        // data the statement can never take is final. Every job refused, the
        // cause may hold for all (an operator's trigger, a migration's bug):
        // each attempt fails as a retry, which leaves time to fix it.
        let aJobGotThrough = refused.count < jobs.count
        for (job, refusal) in refused {
            logger.error("the database refused the job's statement; its attempt fails", metadata: [
                "lane": "\(lane)", "job_id": "\(job.id)", "kind": "\(job.kind)", "error": "\(refusal)",
            ])
            outcomes.append(try await processor.fail(
                job, refused: refusal, final: aJobGotThrough && refusal.isPermanent, on: connection))
        }
        return outcomes
    }

    /// After a lane abandoned a batch at an attempt's timeout: the attempt
    /// fails, the batch's other jobs are ready again.
    private func settle(_ timedOut: AttemptTimedOut, lane: Int) async {
        logger.error("attempt timed out; its batch was abandoned", metadata: [
            "lane": "\(lane)", "job_ids": "\(timedOut.jobs.map(\.id))", "kind": "\(timedOut.jobs.first?.kind ?? "-")",
            "timeout_ms": "\(timedOut.timeout.milliseconds)",
        ])
        counters.attemptsTimedOut(timedOut.jobs)
        await settleAbandoned(timedOut.batch, lane: lane) { try await self.processor.settle(timedOut) }
    }

    /// After a lane abandoned a batch for an operator's cancel: the cancelled
    /// jobs are dead-lettered, the batch's other jobs are ready again.
    private func settle(_ cancelled: JobsCancelled, lane: Int) async {
        logger.warning("job cancelled while running; its batch was abandoned", metadata: [
            "lane": "\(lane)", "job_ids": "\(cancelled.jobs.map(\.id))", "kind": "\(cancelled.jobs.first?.kind ?? "-")",
        ])
        await settleAbandoned(cancelled.batch, lane: lane) { try await self.processor.settle(cancelled) }
    }

    /// Settles an abandoned batch with `settle`; given up, its jobs return
    /// when their leases expire.
    private func settleAbandoned(
        _ batch: [Job], lane: Int, _ settle: @escaping @Sendable () async throws -> [JobOutcome]
    ) async {
        do {
            // Until the server ends the abandoned session, which holds the jobs' rows.
            let outcomes = try await withDeadline(in: configuration.silenceTimeout, for: "settling an abandoned batch", settle)
            counters.record(outcomes, of: batch)
        } catch {
            counters.batchFailed()
            logger.error("abandoned batch not settled; its jobs return when their leases expire", metadata: [
                "lane": "\(lane)", "error": "\(String(reflecting: error))",
            ])
        }
    }

    /// `workerctl jobs cancel` named `ids`: the requests for those this worker
    /// holds are read, so that their lanes stop them. A notification without
    /// a request (anyone may send one) changes nothing.
    private func cancelRequested(_ ids: [Int64]) async {
        let held = Set(leases.all.map(\.jobID)).intersection(ids)
        guard !held.isEmpty else { return }
        do {
            let notes = try await withDeadline(in: configuration.statementDeadline, for: "reading cancel requests") {
                try await CancelRequests(client: self.client, logger: self.logger).notes(for: Array(held))
            }
            guard !notes.isEmpty else { return }
            // The leases held now: a batch that ended meanwhile has nothing to stop.
            cancelNotes.add(notes, held: leases.all)
            logger.info("cancel requested", metadata: ["job_ids": "\(notes.keys.sorted())"])
        } catch {
            logger.warning("cancel requests not read", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
