import Logging
import PostgresNIO

/// Requests to stop jobs that workers are running (`worker.cancel_requests`,
/// sql/028): `workerctl jobs cancel` writes them and sends their ids on
/// `worker_cancel`; a worker running one of the jobs reads its note here and
/// moves the job to the dead letters as cancelled. A job the command could
/// move itself (its handler running outside a transaction) needs no request:
/// its dead letter tells its worker to stop the handler. A notification
/// without either (anyone may NOTIFY) makes a worker look, and nothing more.
public struct CancelRequests: Sendable {
    public static let channel = "worker_cancel"

    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Asks for `ids` to be stopped with `note` as their dead letters' last
    /// error; each request holds for `duration` (the command's wait), then a
    /// worker no longer acts on it. Tells the workers.
    public func request(_ ids: [Int64], note: String, for duration: Duration) async throws {
        guard !ids.isEmpty else { return }
        try await client.query(
            """
            INSERT INTO worker.cancel_requests (job_id, note, expires_at)
            SELECT id, \(note), now() + \(duration.milliseconds) * interval '1 millisecond' FROM unnest(\(ids)::bigint[]) AS id
            ON CONFLICT (job_id) DO UPDATE SET note = excluded.note, requested_by = excluded.requested_by,
                requested_at = excluded.requested_at, expires_at = excluded.expires_at
            """, logger: logger)
        try await notify(ids)
    }

    /// Sends `ids` on the channel, again when the first time may have been
    /// missed (a worker's listener reconnecting, a job claimed again since).
    public func notify(_ ids: [Int64]) async throws {
        // A payload holds under 8,000 bytes: 400 ids of up to 19 digits fit.
        let payloads = stride(from: 0, to: ids.count, by: 400).map { start in
            ids[start..<min(start + 400, ids.count)].map(String.init).joined(separator: ",")
        }
        guard !payloads.isEmpty else { return }
        try await client.query(
            "SELECT pg_notify(\(Self.channel), payload) FROM unnest(\(payloads)::text[]) AS payload", logger: logger)
    }

    /// Which of `ids` (jobs a worker holds) were cancelled, each with its
    /// note: by a live request, or already moved to the dead letters as
    /// cancelled. Workerd's look when told.
    public func notes(for ids: [Int64]) async throws -> [Int64: String] {
        var notes: [Int64: String] = [:]
        let rows = try await client.query(
            """
            SELECT job_id, note FROM worker.cancel_requests WHERE job_id = ANY(\(ids)::bigint[]) AND expires_at > now()
            UNION ALL
            SELECT id, coalesce(last_error, 'cancelled') FROM worker.dead_letters
            WHERE id = ANY(\(ids)::bigint[]) AND reason = \(DeadLetterReason.cancelled.rawValue)
            """,
            logger: logger)
        for try await (id, note) in rows.decode((Int64, String).self) { notes[id] = note }
        return notes
    }

    /// Withdraws the requests for `ids`, and any that expired (left by a
    /// command stopped before it withdrew its own).
    public func withdraw(_ ids: [Int64]) async throws {
        try await client.query(
            "DELETE FROM worker.cancel_requests WHERE job_id = ANY(\(ids)::bigint[]) OR expires_at <= now()", logger: logger)
    }

    /// The job ids a notification's payload names; what is not an id is ignored.
    public static func jobIDs(in payload: String) -> [Int64] {
        payload.split(separator: ",").compactMap { Int64($0) }
    }
}
