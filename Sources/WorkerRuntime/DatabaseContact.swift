import Synchronization

/// When this worker last got an answer from the database (a claim or a lease
/// heartbeat). A batch still waiting long after that is talking into a cut
/// link: the server has dropped its session (see
/// `DatabaseConfig.deadPeerDetection`) and the batch can only be abandoned.
final class DatabaseContact: Sendable {
    private let last = Mutex(ContinuousClock.now)

    func heard() { last.withLock { $0 = .now } }
    var lastHeard: ContinuousClock.Instant { last.withLock { $0 } }
}
