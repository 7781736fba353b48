import Foundation
import Logging
import PostgresNIO

/// The statements of the processing transaction. Every write names the lease
/// token, and `lock` checks it under a row lock before anything else happens:
/// a zombie worker whose lease was taken over finds no row and changes nothing.
struct JobTransaction: Sendable {
    let connection: PostgresConnection
    let workerID: String
    let logger: Logger

    /// Locks the rows of the batch's jobs whose leases are still ours, in one
    /// statement; returns each locked job's age by the database clock, and the
    /// session's backend pid. A job missing from the answer was taken over by
    /// another worker. Holding the rows until commit keeps every other worker
    /// off them however long the batch takes.
    func lock(_ leases: [Lease]) async throws -> (ages: [Int64: Duration], session: Int32?) {
        var ages: [Int64: Duration] = [:]
        var session: Int32?
        for try await (id, ageMS, pid) in try await connection.execute(LockJobsCall(leases: leases), logger: logger) {
            ages[id] = .milliseconds(ageMS)
            session = pid
        }
        return (ages, session)
    }

    func savepoint(_ name: Savepoint) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: "SAVEPOINT \(name.rawValue)"), logger: logger)
    }

    func releaseSavepoint(_ name: Savepoint) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: "RELEASE SAVEPOINT \(name.rawValue)"), logger: logger)
    }

    /// Undoes everything since the savepoint, also after an error aborted the transaction.
    func rollbackToSavepoint(_ name: Savepoint) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: "ROLLBACK TO SAVEPOINT \(name.rawValue)"), logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "RELEASE SAVEPOINT \(name.rawValue)"), logger: logger)
    }

    /// The savepoints of a job: `job` spans its idempotency key and effects (a
    /// failure undoes both, so a retry can claim the key again); `handler`
    /// spans the effects only (a business rejection undoes them and keeps the key).
    enum Savepoint: String {
        case job = "job", handler = "handler"
    }

    /// Deletes the rows of finished jobs and stores the results of the keys
    /// they completed, in one statement at the end of the batch (the rows are
    /// locked by `lock` until then).
    /// Returns the ids of the jobs it deleted.
    func ack(_ leases: [Lease], completing keys: [CompletedKey]) async throws -> Set<Int64> {
        guard !leases.isEmpty else { return [] }
        var acked: Set<Int64> = []
        for try await id in try await connection.execute(AckJobsCall(leases: leases, keys: keys), logger: logger) {
            acked.insert(id)
        }
        return acked
    }

    /// Whether the job was still ours: without the batch's lock (a batch of
    /// jobs that write nothing), a zombie's reschedule finds no row.
    func reschedule(_ job: Job, after delay: Duration, error: String) async throws -> Bool {
        try await connection.query(
            """
            UPDATE worker.jobs
            SET visible_at = now() + \(delay.milliseconds)::bigint * interval '1 millisecond',
                lease_token = NULL, leased_by = NULL, leased_at = NULL,
                last_error = \(error),
                errors = errors || jsonb_build_array(jsonb_build_object(
                    'attempt', attempts, 'at', now(), 'error', \(error)::text, 'worker', \(workerID)::text))
            WHERE id = \(job.id) AND lease_token = \(job.lease.token)
            RETURNING id
            """, logger: logger).hasRows()
    }

    /// Puts the job off for `delay` (the caller keeps it within
    /// `BatchProcessor.longestSnooze`) and gives back the attempt its claim
    /// counted: a snooze is not a failure, and leaves no error behind.
    func snooze(_ job: Job, for delay: Duration) async throws -> Bool {
        try await connection.query(
            """
            UPDATE worker.jobs
            SET visible_at = now() + \(delay.milliseconds)::bigint * interval '1 millisecond',
                attempts = greatest(attempts - 1, 0), lease_token = NULL, leased_by = NULL, leased_at = NULL
            WHERE id = \(job.id) AND lease_token = \(job.lease.token)
            RETURNING id
            """, logger: logger).hasRows()
    }

    /// Moves the job to the dead-letter table in one statement: the row leaves
    /// `jobs` and enters `dead_letters` together or not at all. Whether the
    /// job was still ours, as for `reschedule`.
    func deadLetter(_ job: Job, reason: DeadLetterReason, error: String?, attempts: Int) async throws -> Bool {
        try await connection.query(
            """
            WITH moved AS (
                DELETE FROM worker.jobs WHERE id = \(job.id) AND lease_token = \(job.lease.token) RETURNING *
            )
            INSERT INTO worker.dead_letters (
                id, queue, kind, payload, idempotency_key, priority, attempts, max_attempts, created_at,
                redrive_count, reason, last_error, errors, failed_by, ordering_key)
            SELECT id, queue, kind, payload, idempotency_key, priority, \(attempts)::integer, max_attempts, created_at,
                redrive_count, \(reason.rawValue), coalesce(\(error)::text, last_error),
                CASE WHEN \(error)::text IS NULL THEN errors
                     ELSE errors || jsonb_build_array(jsonb_build_object(
                         'attempt', attempts, 'at', now(), 'error', \(error)::text, 'worker', \(workerID)::text)) END,
                \(workerID), ordering_key
            FROM moved
            RETURNING id
            """, logger: logger).hasRows()
    }
}
