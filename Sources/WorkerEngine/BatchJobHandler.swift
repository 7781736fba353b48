/// A handler that does the work of many jobs of its kind in a few set-based
/// statements rather than a few per job: the round trips, not the rows, are
/// what a batch of small effects spends its time on.
///
/// The batch's first run (the one without savepoints) hands each contiguous
/// run of such jobs, in lock order, to `handleBatch`; `handle` stays the path
/// of every job it leaves, and of every job when a batch runs again with a
/// savepoint per job.
public protocol BatchJobHandler: JobHandler {
    /// Does the work of the first jobs of `jobs` and returns their results, in
    /// order. The jobs are valid events of this kind whose idempotency keys
    /// are owned, in lock order. It stops before the first job it cannot
    /// finish without `handle` (a rejection, a compensation, a resumed saga),
    /// having changed nothing for it: that job then runs through `handle`,
    /// and the jobs after it come back in another call. Throwing abandons the
    /// run as a failing `handle` does: the batch runs again a job at a time.
    func handleBatch(_ jobs: [Job], context: JobContext) async throws -> [JobResult]
}
