import Foundation
import Logging
import PostgresNIO

/// Runs a claimed batch in one transaction: each job is acked, retried or
/// dead-lettered on its own (partial batch failure), and the batch costs one
/// commit instead of one per job.
///
/// A batch first runs without savepoints (the fast path), its idempotency
/// keys claimed in one statement: when every handler succeeds, nothing needs
/// undoing, and a savepoint pair per job would double its round trips. The
/// first handler that throws abandons that run: the transaction rolls back and
/// the batch runs again with a savepoint and a key claim per job, so that the
/// failure is undone on its own and the other jobs still commit.
public struct BatchProcessor: Sendable {
    public let client: PostgresClient
    public let handlers: HandlerRegistry
    public let workerID: String
    public let logger: Logger

    public init(client: PostgresClient, handlers: HandlerRegistry, workerID: String, logger: Logger) {
        self.client = client
        self.handlers = handlers
        self.workerID = workerID
        self.logger = JobLogMetadata.adding(to: logger)
    }

    /// Processes `jobs` in lock order (see `JobHandler.lockOrder`). Before
    /// each job it asks `shouldStart`; once that says no (shutdown), the jobs
    /// not started are released in the same transaction. `inSession` learns
    /// the backend pid of the batch's session once its jobs are locked. The
    /// outcomes are known to be committed when this returns.
    public func process(
        _ jobs: [Job], shouldStart: @escaping @Sendable () -> Bool = { true },
        inSession: @escaping @Sendable (Int32) -> Void = { _ in }
    ) async throws -> [JobOutcome] {
        guard !jobs.isEmpty else { return [] }
        return try await client.withConnection { connection in
            try await process(jobs, on: connection, shouldStart: shouldStart, inSession: inSession)
        }
    }

    /// `process` on a connection the caller holds, `attemptStarted` and
    /// `attemptEnded` framing each attempt and `cancelNote` naming the jobs an
    /// operator cancelled (see `BatchHooks`); like `withLiveConnection`,
    /// it fails as soon as the connection closes, and cancelling it closes the
    /// connection (the server then rolls the batch back).
    public func process(
        _ jobs: [Job], on connection: PostgresConnection, shouldStart: @escaping @Sendable () -> Bool = { true },
        inSession: @escaping @Sendable (Int32) -> Void = { _ in },
        attemptStarted: @escaping @Sendable ([Job], Duration?) -> Void = { _, _ in },
        attemptEnded: @escaping @Sendable () -> Void = {},
        ended: @escaping @Sendable (JobOutcome) -> Void = { _ in },
        cancelNote: @escaping @Sendable (Job) -> String? = { _ in nil }
    ) async throws -> [JobOutcome] {
        guard !jobs.isEmpty else { return [] }
        let jobs = inLockOrder(jobs)
        let hooks = BatchHooks(
            shouldStart: shouldStart, inSession: inSession, attemptStarted: attemptStarted, attemptEnded: attemptEnded,
            ended: ended, cancelNote: cancelNote)
        return try await connection.failingOnClose { connection in
            let run: BatchRun
            if jobs.allSatisfy(self.needsNoTransaction) {
                let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
                run = try await self.run(jobs, ages: nil, guarded: nil, in: tx, hooks: hooks)
            } else {
                run = try await self.runFastThenGuarded(jobs, on: connection, hooks: hooks)
            }
            JobMetrics.recordHandlerTimes(run.handlerTimes)
            return run.outcomes
        }
    }

    /// Runs the batch without savepoints and, if a handler fails, again with a
    /// savepoint per job, where the failed job's attempt is replayed from what
    /// it threw rather than run again: a failing handler (a payment gateway
    /// that is down, say) is not called twice for one attempt.
    private func runFastThenGuarded(
        _ jobs: [Job], on connection: PostgresConnection, hooks: BatchHooks
    ) async throws -> BatchRun {
        do {
            return try await runInTransaction(jobs, guarded: nil, on: connection, hooks: hooks)
        } catch let failed as PostgresTransactionError {
            // Rolled back (postgres-nio wraps what the transaction's body threw).
            guard let abandoned = failed.closureError as? FastPathAbandoned, failed.rollbackError == nil else {
                throw failed
            }
            hooks.attemptEnded()  // replayed, not run again
            logger.debug("batch runs again with a savepoint per job", metadata: [
                "job_id": "\(abandoned.jobID.map(String.init) ?? "batch")", "error": "\(Self.describe(abandoned.error))",
            ])
            return try await runInTransaction(jobs, guarded: abandoned, on: connection, hooks: hooks)
        }
    }

    /// A job whose handler writes nothing, without a key or a maximum age, has
    /// nothing to hold a lock or a transaction for: a batch of such jobs runs
    /// like the pgbench ceiling, the claim and then one ack statement, whose
    /// lease tokens keep a zombie's ack out.
    private func needsNoTransaction(_ job: Job) -> Bool {
        guard let handler = handlers.handler(for: job.kind) else { return false }
        return !handler.writesToDatabase && handlers.idempotencyTTL(for: job.kind) == nil
            && handlers.policy(for: job.kind).maxAge == nil
    }

    /// Runs the batch in one transaction that first locks its jobs; `guarded`:
    /// with a savepoint per job, after the unguarded run was abandoned so.
    private func runInTransaction(
        _ jobs: [Job], guarded: FastPathAbandoned?, on connection: PostgresConnection, hooks: BatchHooks
    ) async throws -> BatchRun {
        try await OutcomeLog.committing(on: connection, logger: logger) { connection in
            let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
            let (ages, session) = try await tx.lock(jobs.map(\.lease))
            if let session { hooks.inSession(session) }
            return try await self.run(jobs, ages: ages, guarded: guarded, in: tx, hooks: hooks)
        }
    }

    /// Runs the jobs one after the other and acks the finished ones at the
    /// end. `ages` are those of the jobs locked with their lease still ours;
    /// `nil` when nothing was locked, and then the ack finds out whose lease was lost.
    private func run(
        _ jobs: [Job], ages: [Int64: Duration]?, guarded: FastPathAbandoned?, in tx: JobTransaction, hooks: BatchHooks
    ) async throws -> BatchRun {
        // Jobs whose lease is lost are skipped; without locks (`ages == nil`),
        // the jobs have no maximum age and the ack tells.
        let held = ages.map { ages in jobs.filter { ages[$0.id] != nil } } ?? jobs
        var refusals: [Int64: Refusal] = [:]
        for job in held { refusals[job.id] = refusal(of: job, age: ages?[job.id] ?? .zero) }
        // Unguarded, the keys of the whole batch are claimed in one statement.
        var claims: [Int64: IdempotencyClaim] = [:]
        if guarded == nil {
            let requests = held.compactMap { job -> KeyRequest? in
                guard refusals[job.id] == nil, let handler = handlers.handler(for: job.kind),
                      let ttl = handlers.idempotencyTTL(for: job.kind) else { return nil }
                return KeyRequest(jobID: job.id, key: job.idempotencyKey ?? handler.idempotencyKey(for: job), ttl: ttl)
            }
            if !requests.isEmpty { claims = try await tx.claimIdempotencyKeys(requests) }
        }

        // Unguarded, a batch handler does the work of its kind's jobs ahead of their turn.
        func batchable(_ job: Job) -> Bool {
            guarded == nil && refusals[job.id] == nil && ages.map { $0[job.id] != nil } ?? true
                && hooks.cancelNote(job) == nil
                && (handlers.idempotencyTTL(for: job.kind) == nil || claims[job.id]?.ownedKey != nil)
        }
        var batched: [Int64: KnownAnswer] = [:]
        var batchStoppedAt: Set<Int64> = []  // jobs a batch call left to `handle`

        var outcomes: [JobOutcome] = []
        var finished: [Lease] = []
        var completed: [CompletedKey] = []
        var handlerTimes: [HandlerTime] = []
        var unstarted: [Job] = []
        for (index, job) in jobs.enumerated() {
            // Abandoned (at an attempt's timeout, say), a batch whose handler
            // ignored the cancellation goes no further when it returns.
            try Task.checkCancellation()
            var known = batched.removeValue(forKey: job.id)
            if let replay = guarded, replay.replays(job.id) { known = .replayed(replay) }
            // Once the worker stops, only jobs that have started go on: those
            // their batch handler did, and the failure being replayed (its
            // attempt happened: it is counted and its error kept, not given back).
            guard known != nil || (unstarted.isEmpty && hooks.shouldStart()) else {
                unstarted.append(job)
                continue
            }
            if let ages, ages[job.id] == nil {
                leaseLost(job)
                outcomes.append(.leaseLost(jobID: job.id))
                continue
            }
            if known == nil, let note = hooks.cancelNote(job) {
                // An operator cancelled it while it waited its turn: it goes without running.
                let outcome = try await JobLogMetadata.$current.withValue(JobLogMetadata(job)) {
                    try await deadLetter(job, .cancelled, error: note, attempts: job.attempts, in: tx)
                }
                outcomes.append(outcome)
                if ages == nil { hooks.ended(outcome) }
                if let key = claims[job.id]?.ownedKey {
                    // Free, its key goes to the batch-mates that met it, each claiming it in its turn.
                    try await tx.dropIdempotencyKeys([key])
                    claims = claims.filter { $0.value.holder != job.id }
                }
                continue
            }
            if known == nil, batchable(job), !batchStoppedAt.contains(job.id),
               let handler = handlers.handler(for: job.kind) as? any BatchJobHandler {
                let group = Array(jobs[index...].prefix { $0.kind == job.kind && batchable($0) })
                hooks.attemptStarted(group, handlers.policy(for: job.kind).timeout)
                let answers = try await handleBatch(group, with: handler, in: tx)
                hooks.attemptEnded()
                for (batchedJob, answer) in answers { batched[batchedJob] = answer }
                if answers.count < group.count { batchStoppedAt.insert(group[answers.count].id) }
                known = batched.removeValue(forKey: job.id)
            }
            if known == nil { hooks.attemptStarted([job], handlers.policy(for: job.kind).timeout) }
            let done = try await process(
                job, refusal: refusals[job.id], claim: claims[job.id], in: tx, guarded: guarded != nil, known: known)
            // Its outcome before its attempt's end: an abandoned batch finds one or the other.
            if ages == nil { hooks.ended(done.outcome) }
            hooks.attemptEnded()
            if done.outcome.isFinished { finished.append(job.lease) }
            if let key = done.completedKey { completed.append(key) }
            if let time = done.handlerTime { handlerTimes.append(HandlerTime(kind: job.kind, duration: time)) }
            outcomes.append(done.outcome)
        }
        if !unstarted.isEmpty {
            _ = try await JobQueue.release(unstarted.map(\.lease), on: tx.connection, logger: logger)
            try await tx.dropIdempotencyKeys(unstarted.compactMap { claims[$0.id]?.ownedKey })
            outcomes += unstarted.map { .released(jobID: $0.id) }
        }
        let acked = try await tx.ack(finished, completing: completed)
        if ages == nil && acked.count < finished.count {
            outcomes = outcomes.map { outcome in
                guard outcome.isFinished, !acked.contains(outcome.jobID),
                      let job = jobs.first(where: { $0.id == outcome.jobID }) else { return outcome }
                leaseLost(job)
                return .leaseLost(jobID: job.id)
            }
        }
        return BatchRun(outcomes: outcomes, handlerTimes: handlerTimes)
    }

    /// Runs `handleBatch` for `jobs`; returns the answers of those it did,
    /// each with its share of the call's time.
    private func handleBatch(
        _ jobs: [Job], with handler: any BatchJobHandler, in tx: JobTransaction
    ) async throws -> [(Int64, KnownAnswer)] {
        let context = JobContext(connection: tx.connection, logger: logger, workerID: workerID)
        let started = ContinuousClock.now
        let results: [JobResult]
        do {
            results = try await handler.handleBatch(jobs, context: context)
        } catch {
            throw FastPathAbandoned(jobID: nil, error: error, handlerTime: nil, batchJobIDs: jobs.map(\.id))
        }
        guard results.count <= jobs.count else {
            throw PostgresWorkerError.unexpected("\(jobs[0].kind) handler returned \(results.count) results for \(jobs.count) jobs")
        }
        let share = (ContinuousClock.now - started) / max(results.count, 1)
        return zip(jobs, results).map { job, result in (job.id, .batched(result, handlerTime: share)) }
    }

    func leaseLost(_ job: Job) {
        OutcomeLog.write(logger, .warning, "lease lost: another worker took the job over, or an operator cancelled it", [
            "job_id": "\(job.id)", "lease": "\(job.lease.token)",
        ])
    }

    /// Found by the interleaved chaos run: refunds of the same payments in
    /// concurrent batches, each holding its rows until its commit, deadlocked
    /// (40P01) so often that a backlog drained at a crawl. Priority is not a
    /// sort key here: it decided which jobs were claimed, and a global order
    /// is what prevents the cycles.
    private func inLockOrder(_ jobs: [Job]) -> [Job] {
        jobs.map { job in (job, handlers.handler(for: job.kind)?.lockOrder(for: job) ?? "") }
            .sorted { ($0.0.kind, $0.1, $0.0.id) < ($1.0.kind, $1.1, $1.0.id) }
            .map(\.0)
    }

    /// One job inside the batch's transaction. Done, duplicate and rejected
    /// jobs are acked by the caller, all in one statement, which also stores
    /// the completed key's result. Unguarded, a throwing handler abandons the
    /// run. `known` is the handler's answer when it is known already: done
    /// by its batch handler, or the failure that abandoned the unguarded run,
    /// given back in place of calling the handler again.
    private func process(
        _ job: Job, refusal: Refusal?, claim: IdempotencyClaim?, in tx: JobTransaction, guarded: Bool,
        known: KnownAnswer?
    ) async throws -> ProcessedJob {
        try await JobLogMetadata.$current.withValue(JobLogMetadata(job)) {
            try await processAsCurrent(job, refusal: refusal, claim: claim, in: tx, guarded: guarded, known: known)
        }
    }

    private func processAsCurrent(
        _ job: Job, refusal: Refusal?, claim: IdempotencyClaim?, in tx: JobTransaction, guarded: Bool,
        known: KnownAnswer?
    ) async throws -> ProcessedJob {
        func deadLetter(_ reason: DeadLetterReason, _ error: String?, attempts: Int) async throws -> JobOutcome {
            try await self.deadLetter(job, reason, error: error, attempts: attempts, in: tx)
        }

        if let refusal {
            return ProcessedJob(try await deadLetter(refusal.reason, refusal.error, attempts: refusal.attempts))
        }
        guard let handler = handlers.handler(for: job.kind) else {
            throw PostgresWorkerError.unexpected("no handler for kind \(job.kind) after the checks")
        }

        let context = JobContext(connection: tx.connection, logger: logger, workerID: workerID)
        let ttl = handlers.idempotencyTTL(for: job.kind)
        // Each savepoint statement is a round trip: a job that writes nothing
        // (no key, no effects) has nothing to undo and runs without one.
        let guarded = guarded && (ttl != nil || handler.writesToDatabase)
        var handlerTime: Duration?
        let failure: any Error
        if guarded { try await tx.savepoint(.job) }
        do {
            var key: String?
            if let ttl {
                // Unguarded, only an owned key changes anything: the other
                // answers leave nothing to undo.
                let claimed: IdempotencyClaim
                if let claim {
                    claimed = claim
                } else {
                    claimed = try await tx.claimIdempotencyKey(job, key: job.idempotencyKey ?? handler.idempotencyKey(for: job), ttl: ttl)
                }
                switch claimed {
                case .owned(let owned):
                    key = owned
                case .duplicate(let duplicate, let original, let status):
                    if guarded { try await tx.releaseSavepoint(.job) }
                    OutcomeLog.write(logger, .info, "duplicate event acked with the first one's result", [
                        "idempotency_key": "\(duplicate)", "original_job_id": "\(original)", "status": "\(status)",
                    ])
                    return ProcessedJob(.duplicate(jobID: job.id, of: original))
                case .conflict(let conflicting, let original):
                    if guarded { try await tx.rollbackToSavepoint(.job) }
                    let error = "idempotency key '\(conflicting)' is held by job \(original) with a different payload"
                    return ProcessedJob(try await deadLetter(.idempotencyConflict, error, attempts: job.attempts))
                }
            }
            // A rejection undoes the effects and keeps the key: the effects need
            // a savepoint of their own only when there is a key to keep.
            let effects: JobTransaction.Savepoint? =
                guarded && handler.writesToDatabase ? (key == nil ? .job : .handler) : nil
            if effects == .handler { try await tx.savepoint(.handler) }
            do {
                let result: JobResult
                do {
                    let started = ContinuousClock.now
                    defer { handlerTime = known?.handlerTime ?? (.now - started) }
                    switch known {
                    case .replayed(let abandoned): throw abandoned.error
                    case .batched(let answer, _): result = answer
                    case nil:
                        logger.debug("job started")
                        result = try await handler.handle(job, context: context)
                    }
                }
                // Releasing `job` releases `handler` with it.
                if guarded { try await tx.releaseSavepoint(.job) }
                logger.debug("job done")
                return ProcessedJob(.done(jobID: job.id), key.map { CompletedKey(key: $0, result: result) }, handlerTime)
            } catch JobError.rejected(let reason) where guarded || !handler.writesToDatabase {
                if let effects { try await tx.rollbackToSavepoint(effects) }
                if let key { try await tx.rejectIdempotencyKey(key, reason: reason) }
                if guarded && effects != .job { try await tx.releaseSavepoint(.job) }
                OutcomeLog.write(logger, .info, "event rejected", ["reason": "\(reason)"])
                return ProcessedJob(.rejected(jobID: job.id), nil, handlerTime)
            } catch JobError.compensated(let reason, let message) {
                // The compensations stay; the event is dead-lettered with its reason.
                if let key { try await tx.rejectIdempotencyKey(key, reason: message) }
                if guarded { try await tx.releaseSavepoint(.job) }
                return ProcessedJob(try await deadLetter(reason, message, attempts: job.attempts), nil, handlerTime)
            }
        } catch {
            if guarded {
                try await tx.rollbackToSavepoint(.job)
            } else if handler.writesToDatabase || ttl != nil {
                // Effects or a key may be half written, or the transaction aborted.
                throw FastPathAbandoned(jobID: job.id, error: error, handlerTime: handlerTime, batchJobIDs: [])
            }
            failure = error
        }
        return try await fail(job, failure, handlerTime: handlerTime, in: tx)
    }

    /// Fails the job's attempt with `failure`: dead-lettered when it is not
    /// worth retrying or out of attempts, else rescheduled with backoff; put
    /// off without spending the attempt when the handler snoozed it.
    func fail(_ job: Job, _ failure: any Error, handlerTime: Duration?, in tx: JobTransaction) async throws -> ProcessedJob {
        let policy = handlers.policy(for: job.kind)
        let maxAttempts = job.maxAttempts ?? policy.maxAttempts
        func deadLetter(_ reason: DeadLetterReason, _ error: String?, attempts: Int) async throws -> JobOutcome {
            try await self.deadLetter(job, reason, error: error, attempts: attempts, in: tx)
        }
        let message = Self.describe(failure)
        switch failure as? JobError {
        case .invalidEvent:
            return ProcessedJob(try await deadLetter(.invalidEvent, message, attempts: job.attempts), nil, handlerTime)
        case .nonRetryable, .rejected, .compensated:  // the last two are caught around the handler; elsewhere final
            return ProcessedJob(try await deadLetter(.nonRetryable, message, attempts: job.attempts), nil, handlerTime)
        case .snoozed(let asked, _):
            let delay = min(max(asked, .zero), Self.longestSnooze)
            guard try await tx.snooze(job, for: delay) else {
                leaseLost(job)
                return ProcessedJob(.leaseLost(jobID: job.id), nil, handlerTime)
            }
            OutcomeLog.write(logger, .info, "job snoozed", ["reason": "\(message)", "snooze_ms": "\(delay.milliseconds)"])
            return ProcessedJob(.snoozed(jobID: job.id, delay: delay), nil, handlerTime)
        case .retryable, nil:
            guard job.attempts < maxAttempts else {
                return ProcessedJob(try await deadLetter(.maxAttempts, message, attempts: job.attempts), nil, handlerTime)
            }
            let delay = policy.delay(afterAttempt: job.attempts)
            guard try await tx.reschedule(job, after: delay, error: message) else {
                leaseLost(job)
                return ProcessedJob(.leaseLost(jobID: job.id), nil, handlerTime)
            }
            OutcomeLog.write(logger, .warning, "job failed, retrying", ["error": "\(message)", "retry_in_ms": "\(delay.milliseconds)"])
            return ProcessedJob(.retried(jobID: job.id, delay: delay), nil, handlerTime)
        }
    }

    /// Why the job is dead-lettered before anything of its own runs, if it is:
    /// too old, out of attempts, of an unknown kind or not a valid event.
    private func refusal(of job: Job, age: Duration) -> Refusal? {
        let policy = handlers.policy(for: job.kind)
        if let maxAge = policy.maxAge, age > maxAge {
            return Refusal(
                reason: .expired, error: "job is \(Int(age.seconds))s old, over the max age of \(Int(maxAge.seconds))s",
                attempts: job.attempts - 1)
        }
        if job.attempts > job.maxAttempts ?? policy.maxAttempts {
            // The previous attempt took its worker down or timed out: its lease
            // expiry is already in the error history.
            return Refusal(reason: .maxAttempts, error: nil, attempts: job.attempts - 1)
        }
        guard let handler = handlers.handler(for: job.kind) else {
            return Refusal(reason: .invalidEvent, error: "unknown kind '\(job.kind)'", attempts: job.attempts)
        }
        return invalidity(of: job, handler: handler).map { Refusal(reason: .invalidEvent, error: $0, attempts: job.attempts) }
    }

    /// Why the payload is not a valid event of its kind, checked before any effect.
    private func invalidity(of job: Job, handler: any JobHandler) -> String? {
        let size = job.payload.utf8.count
        if size > handlers.maxPayloadBytes {
            return "payload is \(size) bytes, over the limit of \(handlers.maxPayloadBytes)"
        }
        guard let schema = handler.schema else { return nil }
        // jsonb only holds JSON: what is not read is past this reader's
        // limits (nesting, a number no Double holds), and the reason says which.
        guard let document = job.document else {
            do { _ = try JSONValue(parsing: job.payload) } catch { return "\(job.kind): payload not read: \(error)" }
            return "\(job.kind): payload not read"
        }
        return schema.violation(in: document).map { "\(job.kind): \($0)" }
    }

    func deadLetter(
        _ job: Job, _ reason: DeadLetterReason, error: String?, attempts: Int, in tx: JobTransaction
    ) async throws -> JobOutcome {
        guard try await tx.deadLetter(job, reason: reason, error: error, attempts: attempts) else {
            leaseLost(job)
            return .leaseLost(jobID: job.id)
        }
        OutcomeLog.write(logger, .error, "job dead-lettered", ["reason": "\(reason.rawValue)", "error": "\(error ?? "-")"])
        return .deadLettered(jobID: job.id, reason: reason)
    }

    /// The longest a snooze puts a job off (SQS's longest visibility timeout):
    /// a downstream's Retry-After of a year, or of `Duration`'s overflow,
    /// must not fail the batch's statement or the worker.
    static let longestSnooze: Duration = .seconds(12 * 3600)

    /// Error text as stored in `last_error`: bounded, so that a handler cannot
    /// bloat the row with a huge message.
    static func describe(_ error: any Error) -> String {
        let text = errorText(error)
        return text.count > 2000 ? String(text.prefix(2000)) + "…" : text
    }
}

/// What the lane running a batch learns and decides while it runs.
struct BatchHooks: Sendable {
    /// Whether the next job may start (no once the worker stops).
    let shouldStart: @Sendable () -> Bool
    /// The backend pid of the batch's session, once its jobs are locked.
    let inSession: @Sendable (Int32) -> Void
    /// An attempt starts (of one job, or of a batch handler's call for
    /// several), with its kind's timeout; and it has ended, so that the
    /// batch's ack and commit are not timed as part of it.
    let attemptStarted: @Sendable ([Job], Duration?) -> Void
    let attemptEnded: @Sendable () -> Void
    /// A job of a batch without a transaction (`ages == nil`) has its
    /// outcome: written already, or, finished, waiting for the batch's ack,
    /// which a batch abandoned now must still do for it (its handler's work
    /// is done, outside the database, and must not run again).
    let ended: @Sendable (JobOutcome) -> Void
    /// The note of an operator's request to cancel the job (`workerctl jobs
    /// cancel` while it ran), if there is one: a job not started yet is
    /// dead-lettered as cancelled in its turn, without running.
    let cancelNote: @Sendable (Job) -> String?
}

/// Thrown to abandon a batch's unguarded run: job `jobID` (`nil`: a batch
/// handler's call) failed with `error`, and what it wrote can only be undone
/// with the whole run.
struct FastPathAbandoned: Error {
    let jobID: Int64?
    let error: any Error
    /// How long its handler ran (`nil`: it failed before the handler).
    /// (A compensated saga never abandons a run: it keeps its compensations.)
    let handlerTime: Duration?
    /// The jobs of the batch handler's call, when it failed.
    let batchJobIDs: [Int64]

    /// Whether the guarded run gives this failure back as `jobID`'s answer
    /// instead of calling its handler: the job that failed, or every job of a
    /// batch call that snoozed (what asked the call to wait, a throttled
    /// downstream, would be called again for each of them otherwise).
    func replays(_ jobID: Int64) -> Bool {
        if jobID == self.jobID { return true }
        guard case .snoozed? = error as? JobError else { return false }
        return batchJobIDs.contains(jobID)
    }
}

/// A handler's answer for a job, known before the job's turn comes.
enum KnownAnswer {
    /// Done by its kind's batch handler, with the job's share of the call's time.
    case batched(JobResult, handlerTime: Duration)
    /// The failure that abandoned the unguarded run, replayed in the guarded one.
    case replayed(FastPathAbandoned)

    var handlerTime: Duration? {
        switch self {
        case .batched(_, let time): time
        case .replayed(let abandoned): abandoned.handlerTime
        }
    }
}

/// A dead letter decided before a job's own statements: its reason, error and
/// the attempts it counts.
struct Refusal {
    let reason: DeadLetterReason
    let error: String?
    let attempts: Int
}

/// What one run of a batch did, known to be committed once it returns.
struct BatchRun {
    var outcomes: [JobOutcome]
    var handlerTimes: [HandlerTime]
}

/// What became of one job in a run, and what its batch's ack must store.
struct ProcessedJob {
    var outcome: JobOutcome
    var completedKey: CompletedKey?
    var handlerTime: Duration?

    init(_ outcome: JobOutcome, _ completedKey: CompletedKey? = nil, _ handlerTime: Duration? = nil) {
        self.outcome = outcome
        self.completedKey = completedKey
        self.handlerTime = handlerTime
    }
}

/// What became of one job of a batch.
public enum JobOutcome: Sendable, Equatable {
    case done(jobID: Int64)
    case retried(jobID: Int64, delay: Duration)
    /// Put off by its handler (`JobError.snoozed`), its attempt given back.
    case snoozed(jobID: Int64, delay: Duration)
    case deadLettered(jobID: Int64, reason: DeadLetterReason)
    /// The lease token no longer matched: another worker owns the job.
    case leaseLost(jobID: Int64)
    /// Not started because the worker is stopping; the job is ready again.
    case released(jobID: Int64)
    /// The same event was processed already (by job `of`): acked, nothing applied.
    case duplicate(jobID: Int64, of: Int64)
    /// A business rejection: recorded as the event's result and acked.
    case rejected(jobID: Int64)

    /// Whether the job leaves the queue with the batch's ack.
    var isFinished: Bool {
        switch self {
        case .done, .duplicate, .rejected: true
        case .retried, .snoozed, .deadLettered, .leaseLost, .released: false
        }
    }

    public var jobID: Int64 {
        switch self {
        case .done(let id), .retried(let id, _), .snoozed(let id, _), .deadLettered(let id, _), .leaseLost(let id),
             .released(let id), .duplicate(let id, _), .rejected(let id): id
        }
    }
}
