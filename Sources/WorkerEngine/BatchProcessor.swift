import Foundation
import Logging
import PostgresNIO

/// Runs a claimed batch in one transaction: each job is acked, retried or
/// dead-lettered on its own (partial batch failure), and the batch costs one
/// commit instead of one per job.
///
/// A batch first runs without savepoints (the fast path): when every handler
/// succeeds, nothing needs undoing, and a savepoint pair per job would double
/// its round trips. The first handler that throws abandons that run: the
/// transaction rolls back and the batch runs again with a savepoint per job,
/// so that the failure is undone on its own and the other jobs still commit.
public struct BatchProcessor: Sendable {
    public let client: PostgresClient
    public let handlers: HandlerRegistry
    public let workerID: String
    public let logger: Logger

    public init(client: PostgresClient, handlers: HandlerRegistry, workerID: String, logger: Logger) {
        self.client = client
        self.handlers = handlers
        self.workerID = workerID
        self.logger = logger
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
        let jobs = inLockOrder(jobs)
        return try await client.withLiveConnection { connection in
            do {
                return try await self.run(jobs, guarded: false, on: connection, shouldStart: shouldStart, inSession: inSession)
            } catch let abandoned as FastPathAbandoned {
                self.logger.debug("batch runs again with a savepoint per job", metadata: [
                    "job_id": "\(abandoned.jobID)", "error": "\(Self.describe(abandoned.error))",
                ])
                return try await self.run(jobs, guarded: true, on: connection, shouldStart: shouldStart, inSession: inSession)
            }
        }
    }

    /// One run of the batch in one transaction; `guarded`: with a savepoint per job.
    private func run(
        _ jobs: [Job], guarded: Bool, on connection: PostgresConnection, shouldStart: @Sendable () -> Bool,
        inSession: @Sendable (Int32) -> Void
    ) async throws -> [JobOutcome] {
        try await connection.withTransaction(logger: logger) { connection in
            let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
            let (ages, session) = try await tx.lock(jobs.map(\.lease))
            if let session { inSession(session) }
            var outcomes: [JobOutcome] = []
            var finished: [Lease] = []
            var completed: [CompletedKey] = []
            for (index, job) in jobs.enumerated() {
                guard shouldStart() else {
                    let rest = Array(jobs[index...])
                    _ = try await JobQueue.release(rest.map(\.lease), on: connection, logger: self.logger)
                    outcomes += rest.map { .released(jobID: $0.id) }
                    break
                }
                guard let age = ages[job.id] else {
                    self.logger.warning("lease lost before processing: another worker holds the job now", metadata: [
                        "job_id": "\(job.id)", "lease": "\(job.lease.token)",
                    ])
                    outcomes.append(.leaseLost(jobID: job.id))
                    continue
                }
                let (outcome, key) = try await self.process(job, age: age, in: tx, guarded: guarded)
                if outcome.isFinished { finished.append(job.lease) }
                if let key { completed.append(key) }
                outcomes.append(outcome)
            }
            try await tx.ack(finished, completing: completed)
            return outcomes
        }
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
    /// the returned key's result. Unguarded, a throwing handler abandons the run.
    private func process(
        _ job: Job, age: Duration, in tx: JobTransaction, guarded: Bool
    ) async throws -> (JobOutcome, CompletedKey?) {
        var logger = self.logger
        logger[metadataKey: "job_id"] = "\(job.id)"
        logger[metadataKey: "kind"] = "\(job.kind)"
        logger[metadataKey: "attempt"] = "\(job.attempts)"
        logger[metadataKey: "lease"] = "\(job.lease.token)"

        let policy = handlers.policy(for: job.kind)
        let maxAttempts = job.maxAttempts ?? policy.maxAttempts

        if let maxAge = policy.maxAge, age > maxAge {
            return (try await deadLetter(
                job, .expired, error: "job is \(Int(age.seconds))s old, over the max age of \(Int(maxAge.seconds))s",
                attempts: job.attempts - 1, in: tx, logger: logger), nil)
        }
        if job.attempts > maxAttempts {
            // The previous attempt took its worker down or timed out: its lease
            // expiry is already in the error history.
            return (try await deadLetter(
                job, .maxAttempts, error: nil, attempts: job.attempts - 1, in: tx, logger: logger), nil)
        }
        guard let handler = handlers.handler(for: job.kind) else {
            return (try await deadLetter(
                job, .invalidEvent, error: "unknown kind '\(job.kind)'", attempts: job.attempts, in: tx, logger: logger), nil)
        }

        if let problem = invalidity(of: job, handler: handler) {
            return (try await deadLetter(job, .invalidEvent, error: problem, attempts: job.attempts, in: tx, logger: logger), nil)
        }

        let context = JobContext(connection: tx.connection, logger: logger, workerID: workerID)
        let ttl = handlers.idempotencyTTL(for: job.kind)
        // Each savepoint statement is a round trip: a job that writes nothing
        // (no key, no effects) has nothing to undo and runs without one.
        let guarded = guarded && (ttl != nil || handler.writesToDatabase)
        let failure: any Error
        if guarded { try await tx.savepoint(.job) }
        do {
            var key: String?
            if let ttl {
                // Unguarded, only an owned key changes anything: the other
                // answers leave nothing to undo.
                switch try await tx.claimIdempotencyKey(job, key: job.idempotencyKey ?? handler.idempotencyKey(for: job), ttl: ttl) {
                case .owned(let owned):
                    key = owned
                case .duplicate(let duplicate, let original, let status):
                    if guarded { try await tx.releaseSavepoint(.job) }
                    logger.info("duplicate event acked with the first one's result", metadata: [
                        "idempotency_key": "\(duplicate)", "original_job_id": "\(original)", "status": "\(status)",
                    ])
                    return (.duplicate(jobID: job.id, of: original), nil)
                case .conflict(let conflicting, let original):
                    if guarded { try await tx.rollbackToSavepoint(.job) }
                    return (try await deadLetter(
                        job, .idempotencyConflict,
                        error: "idempotency key '\(conflicting)' is held by job \(original) with a different payload",
                        attempts: job.attempts, in: tx, logger: logger), nil)
                }
            }
            // A rejection undoes the effects and keeps the key: the effects need
            // a savepoint of their own only when there is a key to keep.
            let effects: JobTransaction.Savepoint? =
                guarded && handler.writesToDatabase ? (key == nil ? .job : .handler) : nil
            if effects == .handler { try await tx.savepoint(.handler) }
            do {
                let result = try await JobMetrics.timingHandler(kind: job.kind) {
                    try await handler.handle(job, context: context)
                }
                // Releasing `job` releases `handler` with it.
                if guarded { try await tx.releaseSavepoint(.job) }
                logger.debug("job done")
                return (.done(jobID: job.id), key.map { CompletedKey(key: $0, result: result) })
            } catch JobError.rejected(let reason) where guarded || !handler.writesToDatabase {
                if let effects { try await tx.rollbackToSavepoint(effects) }
                if let key { try await tx.rejectIdempotencyKey(key, reason: reason) }
                if guarded && effects != .job { try await tx.releaseSavepoint(.job) }
                logger.info("event rejected", metadata: ["reason": "\(reason)"])
                return (.rejected(jobID: job.id), nil)
            } catch JobError.compensated(let reason, let message) {
                // The compensations stay; the event is dead-lettered with its reason.
                if let key { try await tx.rejectIdempotencyKey(key, reason: message) }
                if guarded { try await tx.releaseSavepoint(.job) }
                return (try await deadLetter(job, reason, error: message, attempts: job.attempts, in: tx, logger: logger), nil)
            }
        } catch {
            if guarded {
                try await tx.rollbackToSavepoint(.job)
            } else if handler.writesToDatabase || ttl != nil {
                // Effects or a key may be half written, or the transaction aborted.
                throw FastPathAbandoned(jobID: job.id, error: error)
            }
            failure = error
        }

        let message = Self.describe(failure)
        let outcome: JobOutcome
        switch failure as? JobError {
        case .invalidEvent:
            outcome = try await deadLetter(job, .invalidEvent, error: message, attempts: job.attempts, in: tx, logger: logger)
        case .nonRetryable, .rejected, .compensated:  // the last two are caught around the handler; elsewhere final
            outcome = try await deadLetter(job, .nonRetryable, error: message, attempts: job.attempts, in: tx, logger: logger)
        case .retryable, nil:
            guard job.attempts < maxAttempts else {
                return (try await deadLetter(job, .maxAttempts, error: message, attempts: job.attempts, in: tx, logger: logger), nil)
            }
            let delay = policy.delay(afterAttempt: job.attempts)
            try await tx.reschedule(job, after: delay, error: message)
            logger.warning("job failed, retrying", metadata: ["error": "\(message)", "retry_in_ms": "\(delay.milliseconds)"])
            outcome = .retried(jobID: job.id, delay: delay)
        }
        return (outcome, nil)
    }

    /// Why the payload is not a valid event of its kind, checked before any effect.
    private func invalidity(of job: Job, handler: any JobHandler) -> String? {
        let size = job.payload.utf8.count
        if size > handlers.maxPayloadBytes {
            return "payload is \(size) bytes, over the limit of \(handlers.maxPayloadBytes)"
        }
        return handler.schema?.violation(in: job.payload).map { "\(job.kind): \($0)" }
    }

    private func deadLetter(
        _ job: Job, _ reason: DeadLetterReason, error: String?, attempts: Int, in tx: JobTransaction, logger: Logger
    ) async throws -> JobOutcome {
        try await tx.deadLetter(job, reason: reason, error: error, attempts: attempts)
        logger.error("job dead-lettered", metadata: ["reason": "\(reason.rawValue)", "error": "\(error ?? "-")"])
        return .deadLettered(jobID: job.id, reason: reason)
    }

    /// Error text as stored in `last_error`: bounded, so that a handler cannot
    /// bloat the row with a huge message.
    static func describe(_ error: any Error) -> String {
        let text = errorText(error)
        return text.count > 2000 ? String(text.prefix(2000)) + "…" : text
    }
}

/// Thrown to abandon a batch's unguarded run: job `jobID`'s handler failed
/// with `error`, and what it wrote can only be undone with the whole run.
struct FastPathAbandoned: Error {
    let jobID: Int64
    let error: any Error
}

/// What became of one job of a batch.
public enum JobOutcome: Sendable, Equatable {
    case done(jobID: Int64)
    case retried(jobID: Int64, delay: Duration)
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
        case .retried, .deadLettered, .leaseLost, .released: false
        }
    }

    public var jobID: Int64 {
        switch self {
        case .done(let id), .retried(let id, _), .deadLettered(let id, _), .leaseLost(let id), .released(let id),
             .duplicate(let id, _), .rejected(let id): id
        }
    }
}
