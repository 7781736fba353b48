import Logging
import PostgresNIO

/// Holds a LISTEN on `worker_jobs` and wakes idle lanes when a producer inserts
/// into one of this worker's queues. A lost connection is retried with backoff;
/// until it is back, the lanes' polling keeps jobs moving.
struct NotificationListener: Sendable {
    static let channel = "worker_jobs"

    let client: PostgresClient
    let queues: Set<String>
    let wake: WakeSignal
    let logger: Logger

    func run() async {
        var backoff = Backoff()
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        logger.debug("listening for new jobs", metadata: ["channel": "\(Self.channel)"])
                        backoff.reset()
                        // Wake on reconnect too: jobs may have arrived while deaf.
                        wake.signal()
                        for try await notification in notifications where queues.contains(notification.payload) {
                            wake.signal()
                        }
                    }
                }
            } catch where Task.isCancelled {
                return
            } catch {
                logger.warning("LISTEN connection lost, retrying", metadata: ["error": "\(String(reflecting: error))"])
            }
            do { try await Task.sleep(for: backoff.next()) } catch { return }
        }
    }
}
