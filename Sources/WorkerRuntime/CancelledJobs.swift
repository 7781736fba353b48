import Synchronization
import WorkerEngine

/// The operator's requests to cancel jobs this worker holds (`CancelRequests`),
/// each with its note: a lane whose running attempt has one abandons its
/// batch, and a job not started yet is dead-lettered in its turn while its
/// request holds. Kept by lease, so that a note never outlives the attempt it
/// was read for (a redriven job keeps its id).
final class CancelledJobs: Sendable {
    private struct Entry {
        let note: String
        let until: ContinuousClock.Instant?
    }

    private let entries = Mutex<[Lease: Entry]>([:])

    /// Keeps `notes` for those of `held` they name, and drops the notes of
    /// leases no longer held.
    func add(_ notes: [Int64: CancelNote], held: [Lease]) {
        let now = ContinuousClock.now
        entries.withLock { entries in
            let held = Set(held)
            entries = entries.filter { held.contains($0.key) }
            for lease in held {
                guard let found = notes[lease.jobID] else { continue }
                entries[lease] = Entry(note: found.note, until: found.lasting.map { now + $0 })
            }
        }
    }

    func remove(_ jobs: [Job]) { entries.withLock { entries in for job in jobs { entries.removeValue(forKey: job.lease) } } }

    /// The note of the job's live request, if it has one. (Asked for every
    /// job a batch runs: no clock is read, nothing allocated, without one.)
    func note(for job: Job) -> String? {
        entries.withLock { entries in entries[job.lease].flatMap { Self.live($0, at: .now) } }
    }

    /// The notes of those of `jobs` with a live request.
    func notes(of jobs: [Job]) -> [Int64: String] {
        entries.withLock { entries in
            guard !entries.isEmpty else { return [:] }
            let now = ContinuousClock.now
            return jobs.reduce(into: [:]) { found, job in found[job.id] = entries[job.lease].flatMap { Self.live($0, at: now) } }
        }
    }

    private static func live(_ entry: Entry, at now: ContinuousClock.Instant) -> String? {
        entry.until.map { now < $0 } ?? true ? entry.note : nil
    }
}
