import Logging
import PostgresNIO

/// An attempt that ran past its kind's timeout (`RetryPolicy.timeout`): one
/// job's, or a batch handler's call for several. The lane that ran it
/// abandons its batch, closing the connection so that the server rolls back
/// all the batch did, then settles it with `BatchProcessor.settle(_:)`.
public struct AttemptTimedOut: Error, CustomStringConvertible {
    /// The attempt's jobs.
    public let jobs: [Job]
    public let timeout: Duration
    /// The batch the attempt ran in, its jobs included.
    public let batch: [Job]
    /// The outcomes the batch had, without a transaction, before it was abandoned (see `BatchHooks.ended`).
    public let ended: [JobOutcome]

    public init(jobs: [Job], timeout: Duration, batch: [Job], ended: [JobOutcome] = []) {
        self.jobs = jobs
        self.timeout = timeout
        self.batch = batch
        self.ended = ended
    }

    public var description: String { "timed out after \(timeout.settingText); its batch was abandoned" }
}

extension BatchProcessor {
    /// Settles a batch abandoned at an attempt's timeout: the attempt's jobs
    /// fail as a retryable error (rescheduled with backoff, or dead-lettered
    /// when out of attempts), and the batch's other jobs are ready again at
    /// once with their attempt given back (see `settleAbandoned`).
    public func settle(_ timedOut: AttemptTimedOut) async throws -> [JobOutcome] {
        try await settleAbandoned(timedOut.batch, settling: timedOut.jobs, ended: timedOut.ended) { job, tx in
            try await self.fail(job, timedOut, handlerTime: nil, in: tx).outcome
        }
    }

    /// Settles an abandoned batch: `settle` decides the outcome of each of
    /// `jobs` whose lease is still ours; of a batch without a transaction,
    /// the jobs `ended` keep their outcome, those finished acked now; the
    /// batch's other jobs are ready again at once with their attempt given
    /// back: their work was rolled back with the batch, or had not ended.
    /// The lock waits until the server has ended the abandoned session: at
    /// once, or within workerd's `client_connection_check_interval` when a
    /// statement was running.
    func settleAbandoned(
        _ batch: [Job], settling jobs: [Job], ended: [JobOutcome],
        _ settle: @escaping @Sendable (Job, JobTransaction) async throws -> JobOutcome
    ) async throws -> [JobOutcome] {
        let endedIDs = Set(ended.map(\.jobID))
        let jobs = jobs.filter { !endedIDs.contains($0.id) }  // an attempt whose outcome is known is over
        return try await client.withLiveConnection { connection in
            try await OutcomeLog.committing(on: connection, logger: self.logger) { connection in
                let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
                let (ages, _) = try await tx.lock(jobs.map(\.lease))
                var outcomes: [JobOutcome] = []
                for job in jobs {
                    guard ages[job.id] != nil else {
                        outcomes.append(.leaseLost(jobID: job.id))
                        continue
                    }
                    outcomes.append(try await JobLogMetadata.$current.withValue(JobLogMetadata(job)) { try await settle(job, tx) })
                }
                let finished = Dictionary(uniqueKeysWithValues: ended.filter(\.isFinished).map { ($0.jobID, $0) })
                let acked = try await tx.ack(batch.filter { finished[$0.id] != nil }.map(\.lease), completing: [])
                for (id, outcome) in finished { outcomes.append(acked.contains(id) ? outcome : .leaseLost(jobID: id)) }
                outcomes += ended.filter { !$0.isFinished }  // written when they ended
                let settled = endedIDs.union(jobs.map(\.id))
                let others = batch.filter { !settled.contains($0.id) }
                let released = try await JobQueue.release(others.map(\.lease), on: connection, logger: self.logger)
                return outcomes + others.map { released.contains($0.id) ? .released(jobID: $0.id) : .leaseLost(jobID: $0.id) }
            }
        }
    }
}
