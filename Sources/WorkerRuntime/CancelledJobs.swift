import Synchronization
import WorkerEngine

/// The operator's requests to cancel jobs this worker holds (`CancelRequests`),
/// each with its note: a lane whose running attempt has one abandons its
/// batch, and a job not started yet is dead-lettered in its turn.
final class CancelledJobs: Sendable {
    private let notes = Mutex<[Int64: String]>([:])

    func add(_ new: [Int64: String]) { notes.withLock { $0.merge(new) { _, newer in newer } } }
    func remove(_ jobs: [Job]) { notes.withLock { notes in for job in jobs { notes.removeValue(forKey: job.id) } } }
    func note(for id: Int64) -> String? { notes.withLock { $0[id] } }

    /// The notes of those of `jobs` that were cancelled.
    func notes(of jobs: [Job]) -> [Int64: String] {
        notes.withLock { notes in
            guard !notes.isEmpty else { return [:] }
            return jobs.reduce(into: [:]) { found, job in found[job.id] = notes[job.id] }
        }
    }
}
