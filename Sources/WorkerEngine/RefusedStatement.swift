import PostgresNIO

/// A statement of a batch that the server refused for something a job holds
/// (a key too long for its index, a value out of a column's range, a row a
/// constraint forbids): the batch's transaction rolled back and its session
/// is sound. Such a job would fail its whole batch at every claim, its
/// batch-mates losing an attempt and waiting out a lease each time; so the
/// lane runs a refused batch again one job at a time (Lambda's
/// BisectBatchOnFunctionError), and the job refused alone fails its attempt
/// with the server's words.
public struct RefusedStatement: Error, CustomStringConvertible {
    public let sqlState: String
    public let message: String

    public var description: String { "the database refused a statement of its batch: \(message) (SQLSTATE \(sqlState))" }

    /// Nil unless `error` is such a refusal: data a statement cannot take
    /// (SQLSTATE class 22), a constraint (23), a limit (54), or a deadlock or
    /// serialization failure (40) that one job at a time avoids. Not one:
    /// what leaves the session in doubt (a lost connection, a server shutting
    /// down) or holds for every job alike (a permission revoked, a table
    /// missing: failing each job's attempt would dead-letter them all before
    /// an operator could fix it), which the lane leaves to the leases' expiry.
    ///
    /// Only a refusal inside a transaction that rolled back: a batch of
    /// handlers that write nothing runs without one, its retries and dead
    /// letters committed one by one, and running it again would call the
    /// handlers of jobs already settled.
    public init?(_ error: any Error) {
        guard let failed = error as? PostgresTransactionError, failed.rollbackError == nil,
              let refusal = (failed.closureError ?? failed.commitError ?? failed.beginError) as? PSQLError else { return nil }
        guard refusal.code == .server, let state = refusal.serverInfo?[.sqlState],
              ["22", "23", "40", "54"].contains(String(state.prefix(2))) else { return nil }
        sqlState = state
        message = refusal.serverInfo?[.message] ?? "(no message)"
    }

    /// Data a statement cannot take (class 22, a value out of range; 54, past
    /// a limit such as an index row's size) is refused every time: a retry
    /// would only fail its batch again.
    public var isPermanent: Bool { sqlState.hasPrefix("22") || sqlState.hasPrefix("54") }
}

extension BatchProcessor {
    /// Fails the attempt of `job`, run alone, whose statement the database
    /// refused: dead-lettered as non-retryable when `final`, else retried as
    /// any failure (dead-lettered once out of attempts).
    public func fail(_ job: Job, refused: RefusedStatement, final: Bool, on connection: PostgresConnection) async throws -> JobOutcome {
        try await JobLogMetadata.$current.withValue(JobLogMetadata(job)) {
            try await OutcomeLog.committing(on: connection, logger: logger) { connection in
                let tx = JobTransaction(connection: connection, workerID: self.workerID, logger: self.logger)
                guard try await tx.lock([job.lease]).ages[job.id] != nil else {
                    self.leaseLost(job)
                    return .leaseLost(jobID: job.id)
                }
                let failure: any Error = final ? JobError.nonRetryable(refused.description) : refused
                return try await self.fail(job, failure, handlerTime: nil, in: tx).outcome
            }
        }
    }
}
