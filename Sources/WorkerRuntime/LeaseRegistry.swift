import Synchronization
import WorkerEngine

/// The leases this process holds right now, for the heartbeat to extend.
final class LeaseRegistry: Sendable {
    private let leases = Mutex(Set<Lease>())

    func add(_ new: [Lease]) { leases.withLock { $0.formUnion(new) } }
    func remove(_ old: [Lease]) { leases.withLock { $0.subtract(old) } }
    var all: [Lease] { leases.withLock { Array($0) } }
}
