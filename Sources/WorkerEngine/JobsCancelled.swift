/// Jobs an operator cancelled while their worker ran them (`workerctl jobs
/// cancel`, through `CancelRequests`): the lane running one abandons its
/// batch, closing the connection so that the server rolls back all the batch
/// did, then settles it with `BatchProcessor.settle(_:)`.
public struct JobsCancelled: Error, CustomStringConvertible {
    /// The batch's jobs with a request, and each request's note.
    public let jobs: [Job]
    public let notes: [Int64: String]
    /// The batch they ran in, they included.
    public let batch: [Job]
    /// The outcomes the batch had, without a transaction, before it was abandoned (see `BatchHooks.ended`).
    public let ended: [JobOutcome]

    public init(jobs: [Job], notes: [Int64: String], batch: [Job], ended: [JobOutcome] = []) {
        self.jobs = jobs
        self.notes = notes
        self.batch = batch
        self.ended = ended
    }

    public var description: String { "cancelled while running: jobs \(jobs.map(\.id))" }
}

extension BatchProcessor {
    /// Settles a batch abandoned for an operator's cancel: the cancelled jobs
    /// go to the dead letters as `cancelled` with their requests' notes, the
    /// attempt they were in counted; the batch's other jobs are ready again
    /// at once with their attempt given back, those that finished in a batch
    /// without a transaction acked (see `settleAbandoned`).
    public func settle(_ cancelled: JobsCancelled) async throws -> [JobOutcome] {
        try await settleAbandoned(cancelled.batch, settling: cancelled.jobs, ended: cancelled.ended) { job, tx in
            try await self.deadLetter(job, .cancelled, error: cancelled.notes[job.id], attempts: job.attempts, in: tx)
        }
    }
}
