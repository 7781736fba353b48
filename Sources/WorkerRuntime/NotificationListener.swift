import Logging
import PostgresNIO
import WorkerEngine

/// Holds a LISTEN on `worker_jobs` and wakes idle lanes when a producer inserts
/// into one of this worker's queues, and one on `worker_cancel`, whose job ids
/// it hands to `cancelRequested`. A lost connection is retried with backoff;
/// until it is back, the lanes' polling keeps jobs moving (and `workerctl jobs
/// cancel` sends its ids again each second).
struct NotificationListener: Sendable {
    static let channel = "worker_jobs"

    let client: PostgresClient
    let queues: Set<String>
    let wake: WakeSignal
    let logger: Logger
    let cancelRequested: @Sendable ([Int64]) async -> Void

    func run() async {
        var backoff = Backoff()
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { jobs in
                        try await connection.listen(on: CancelRequests.channel) { cancels in
                            logger.debug("listening for new jobs and cancel requests", metadata: [
                                "channels": "\(Self.channel),\(CancelRequests.channel)",
                            ])
                            backoff.reset()
                            // Wake on reconnect too: jobs may have arrived while deaf.
                            wake.signal()
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask {
                                    for try await notification in jobs where queues.contains(notification.payload) {
                                        wake.signal()
                                    }
                                }
                                group.addTask {
                                    for try await notification in cancels {
                                        await cancelRequested(CancelRequests.jobIDs(in: notification.payload))
                                    }
                                }
                                // Either ends only with the connection.
                                try await group.next()
                                group.cancelAll()
                            }
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
