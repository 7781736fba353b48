import Logging
import PostgresNIO

/// An attempt that ran past its kind's timeout (`RetryPolicy.timeout`). The
/// lane that ran it abandons its batch, closing the connection so that the
/// server rolls back all the batch did, then settles it with
/// `BatchProcessor.settle(_:)`.
public struct AttemptTimedOut: Error, CustomStringConvertible {
    public let job: Job
    public let timeout: Duration
    /// The batch the attempt ran in, itself included.
    public let batch: [Job]

    public init(job: Job, timeout: Duration, batch: [Job]) {
        self.job = job
        self.timeout = timeout
        self.batch = batch
    }

    public var description: String {
        let ms = timeout.milliseconds
        return "timed out after \(ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"); its batch was abandoned"
    }
}

extension BatchProcessor {
    /// Settles a batch abandoned at an attempt's timeout: that attempt fails
    /// as a retryable error (rescheduled with backoff, or dead-lettered when
    /// out of attempts), and the batch's other jobs, whose work was rolled
    /// back with it, are ready again at once with their attempt given back.
    /// The lock waits until the server has ended the abandoned session: at
    /// once, or within workerd's `client_connection_check_interval` when a
    /// statement was running.
    public func settle(_ timedOut: AttemptTimedOut) async throws -> [JobOutcome] {
        try await client.withLiveConnection { connection in
            try await connection.withTransaction(logger: self.logger) { connection in
                let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
                let job = timedOut.job
                let (ages, _) = try await tx.lock([job.lease])
                let outcome = ages[job.id] == nil
                    ? .leaseLost(jobID: job.id)
                    : try await self.fail(job, timedOut, handlerTime: timedOut.timeout, in: tx).outcome
                let others = timedOut.batch.filter { $0.id != job.id }
                _ = try await JobQueue.release(others.map(\.lease), on: connection, logger: self.logger)
                return [outcome] + others.map { .released(jobID: $0.id) }
            }
        }
    }
}
