import Foundation
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
    /// error; the requests hold for `duration` (the command's wait), then a
    /// worker no longer acts on them. Tells the workers; returns the
    /// requests' id, for `withdraw`.
    @discardableResult
    public func request(_ ids: [Int64], note: String, for duration: Duration) async throws -> UUID {
        let request = UUID()
        guard !ids.isEmpty else { return request }
        try await client.query(
            """
            INSERT INTO worker.cancel_requests (job_id, request_id, note, expires_at)
            SELECT id, \(request), \(note), now() + \(duration.milliseconds) * interval '1 millisecond'
            FROM unnest(\(ids)::bigint[]) AS id
            """, logger: logger)
        try await notify(ids)
        return request
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

    /// Which of `ids` (jobs a worker holds) were cancelled: by a live
    /// request (the latest to expire, if several), or already moved to the
    /// dead letters as cancelled. Workerd's look when told.
    public func notes(for ids: [Int64]) async throws -> [Int64: CancelNote] {
        var notes: [Int64: CancelNote] = [:]
        let rows = try await client.query(
            """
            SELECT job_id, note, ms FROM (
                SELECT DISTINCT ON (job_id) job_id, note,
                    (extract(epoch FROM expires_at - now()) * 1000)::bigint AS ms
                FROM worker.cancel_requests WHERE job_id = ANY(\(ids)::bigint[]) AND expires_at > now()
                ORDER BY job_id, expires_at DESC
            ) AS live
            UNION ALL
            SELECT id, coalesce(last_error, 'cancelled'), NULL FROM worker.dead_letters
            WHERE id = ANY(\(ids)::bigint[]) AND reason = \(DeadLetterReason.cancelled.rawValue)
            """,
            logger: logger)
        for try await (id, note, ms) in rows.decode((Int64, String, Int64?).self) {
            notes[id] = CancelNote(note: note, lasting: ms.map { .milliseconds($0) })
        }
        return notes
    }

    /// Withdraws the requests made as `request`, and any that expired (left
    /// by a command stopped before it withdrew its own).
    public func withdraw(_ request: UUID) async throws {
        try await client.query(
            "DELETE FROM worker.cancel_requests WHERE request_id = \(request) OR expires_at <= now()", logger: logger)
    }

    /// The job ids a notification's payload names; what is not an id is ignored.
    public static func jobIDs(in payload: String) -> [Int64] {
        payload.split(separator: ",").compactMap { Int64($0) }
    }
}

/// A job's cancel request as a worker reads it.
public struct CancelNote: Sendable, Equatable {
    /// The dead letter's last error.
    public var note: String
    /// How long the request still holds; `nil`: for good (the job is a dead letter already).
    public var lasting: Duration?

    public init(note: String, lasting: Duration?) {
        self.note = note
        self.lasting = lasting
    }
}
