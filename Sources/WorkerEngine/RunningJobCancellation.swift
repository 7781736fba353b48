import Foundation
import PostgresNIO

/// What became of jobs `QueuedJobs.cancelRunning` asked their workers to stop.
public struct RunningJobCancellation: Sendable, Equatable {
    /// Stopped and dead-lettered as cancelled by their workers, or let go
    /// (retried, released) and then cancelled by the command.
    public var cancelled: [Int64] = []
    /// Ended before their workers acted on the request: `done`, or
    /// `dead-lettered as REASON`.
    public var finished: [Int64: String] = [:]
    /// Still held when the wait ran out: a worker that did not act on the
    /// request (an older release, or one cut off from the database), a job
    /// whose turn in a long batch did not come, or a transaction other than
    /// a worker's that holds the row. They run: the requests are withdrawn.
    public var stillRunning: [Int64] = []

    public init() {}
}

extension QueuedJobs {
    /// After `cancel`: asks the workers running the matching jobs it skipped
    /// (their rows locked by a processing transaction) to stop them, and
    /// tells those of `leased` (moved while their handlers may run, their
    /// dead letters the request) to stop their handlers; waits up to `wait`
    /// for the skipped jobs to leave the queue, then withdraws its requests.
    /// `filter` carries the first pass's `enqueuedBy`, so that the same jobs
    /// are meant; at most `limit` of them. `waiting` learns the jobs it
    /// waits for, if any, before it waits.
    public func cancelRunning(
        _ filter: JobFilter, limit: Int, leased: [Int64], note: String, wait: Duration,
        waiting: ([Int64]) -> Void = { _ in }
    ) async throws -> RunningJobCancellation {
        var result = RunningJobCancellation()
        var pending = try await ids(matching: filter, limit: limit)
        if !pending.isEmpty { waiting(pending) }
        let requests = CancelRequests(client: client, logger: logger)
        let request = try await requests.request(pending, note: note, for: wait)
        try await requests.notify(leased)
        let deadline = ContinuousClock.now + wait
        var notified = ContinuousClock.now
        do {
            while !pending.isEmpty {
                // Let go meanwhile (a retry, a release): this command cancels it now.
                var stillThere = filter
                stillThere.ids = pending
                stillThere.afterID = nil
                stillThere.state = nil  // chosen already: released, it is ready; retried, delayed
                let moved = try await cancel(stillThere, limit: pending.count, note: note)
                result.cancelled += moved.map(\.id)
                // Claimed again by a worker that has not locked it: its handler must not run on.
                try await requests.notify(moved.filter(\.wasLeased).map(\.id))
                pending.removeAll { id in moved.contains { $0.id == id } }

                let present = Set(try await ids(matching: JobFilter(ids: pending), limit: pending.count))
                let gone = pending.filter { !present.contains($0) }
                let reasons = try await deadLetterReasons(of: gone)
                for id in gone {
                    switch reasons[id] {
                    case DeadLetterReason.cancelled.rawValue?: result.cancelled.append(id)
                    case let reason?: result.finished[id] = "dead-lettered as \(reason)"
                    case nil: result.finished[id] = "done"
                    }
                }
                pending = pending.filter(present.contains)
                if pending.isEmpty || ContinuousClock.now >= deadline { break }
                // Each second, for a worker that missed it (its listener reconnecting) or claimed the job since.
                if ContinuousClock.now - notified >= .seconds(1) {
                    try await requests.notify(pending)
                    notified = .now
                }
                try await Task.sleep(for: max(.zero, min(.milliseconds(100), deadline - .now)))
            }
        } catch {
            try? await requests.withdraw(request)
            throw error
        }
        try await requests.withdraw(request)
        result.cancelled.sort()
        result.stillRunning = pending
        return result
    }

    /// The ids of up to `limit` jobs matching `filter`, ascending.
    private func ids(matching filter: JobFilter, limit: Int) async throws -> [Int64] {
        try await ids("SELECT id FROM worker.jobs WHERE \(filter) ORDER BY id LIMIT \(limit)")
    }

    /// The dead letters' reasons among `ids`; a job gone from the queue without one was done.
    private func deadLetterReasons(of ids: [Int64]) async throws -> [Int64: String] {
        var reasons: [Int64: String] = [:]
        guard !ids.isEmpty else { return reasons }
        let rows = try await client.query(
            "SELECT id, reason FROM worker.dead_letters WHERE id = ANY(\(ids)::bigint[])", logger: logger)
        for try await (id, reason) in rows.decode((Int64, String).self) { reasons[id] = reason }
        return reasons
    }
}
