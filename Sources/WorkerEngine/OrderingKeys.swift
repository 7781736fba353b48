import Logging
import PostgresNIO

/// The maintenance half of ordering keys (sql/019): a key whose head left
/// the queue while another transaction held the key's lock was noted in
/// `worker.ordering_wakeups` instead of handing over at once; this gives
/// such keys their next head.
public struct OrderingKeys: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Settles up to `limit` notes whose keys are not locked now; returns how
    /// many. On a live connection (see `withLiveConnection`): a worker's stop
    /// cancels it, and a connection the server dropped fails it at once.
    @discardableResult
    public func release(limit: Int = 1000) async throws -> Int {
        let logger = logger
        return try await client.withLiveConnection { connection in
            let rows = try await connection.query("SELECT worker.release_ordering_keys(\(limit)::integer)", logger: logger)
            for try await settled in rows.decode(Int.self) { return settled }
            return 0
        }
    }
}
