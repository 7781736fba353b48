/// Waits between reconnection attempts: doubling from 100 ms to 5 s, with
/// jitter so that a fleet does not reconnect in step after a database restart.
struct Backoff: Sendable {
    private var attempt = 0

    mutating func next() -> Duration {
        attempt += 1
        let ceiling = min(0.1 * Double(1 << min(attempt, 6)), 5.0)
        return .milliseconds(Int64(Double.random(in: ceiling / 2...ceiling) * 1000))
    }

    mutating func reset() { attempt = 0 }
}
