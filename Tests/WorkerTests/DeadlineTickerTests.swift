import Synchronization
import Testing
@testable import WorkerRuntime
import WorkerTestSupport

/// A batch's deadlines share one timer, the worker's ticker.
@Suite(.timeLimit(.minutes(1))) struct DeadlineTickerTests {
    @Test func aDeadlinePassedAtATickCancelsTheBodyAndThrows() async throws {
        let ticker = DeadlineTicker(period: .milliseconds(20))
        let ticking = Task { await ticker.run() }
        defer { ticking.cancel() }
        let bodyCancelled = Atomic<Bool>(false)
        await #expect(throws: DeadlineExceeded.self) {
            try await withDeadline(after(.milliseconds(100)), ticker: ticker, orElse: {
                DeadlineExceeded(operation: "test", reason: "too late")
            }) {
                // Only the deadline's cancellation ends this within the suite's time limit.
                do { try await Task.sleep(for: .seconds(3600)) } catch { bodyCancelled.store(true, ordering: .relaxed) }
            }
        }
        let cancelled = bodyCancelled.load(ordering: .relaxed)
        #expect(cancelled)
    }

    @Test func aBodyThatReturnsEndsItsWatchWithoutWaitingForATick() async throws {
        let ticker = DeadlineTicker(period: .seconds(3600))
        let ticking = Task { await ticker.run() }
        defer { ticking.cancel() }
        for round in 0..<3 {
            // The watch may or may not be waiting for the tick when the body
            // returns; either way the task group waits for it, and a watch left
            // waiting would outlast the suite's time limit.
            let answer = try await withDeadline(after(.seconds(3600)), ticker: ticker, orElse: {
                DeadlineExceeded(operation: "test", reason: "too late")
            }) {
                try await eventually("the watch to wait for a tick") { round == 0 || ticker.waiting == 1 }
                return round
            }
            #expect(answer == round)
            #expect(ticker.waiting == 0)
        }
    }

    @Test func withoutARunningTickerDeadlinesStillPass() async throws {
        let ticker = DeadlineTicker(period: .milliseconds(20))
        await #expect(throws: DeadlineExceeded.self) {
            try await withDeadline(after(.milliseconds(50)), ticker: ticker, orElse: {
                DeadlineExceeded(operation: "test", reason: "too late")
            }) {
                try await Task.sleep(for: .seconds(3600))
            }
        }
    }
}

/// A fixed deadline, `limit` from now, as the lanes' deadline closures answer.
private func after(_ limit: Duration) -> @Sendable () -> ContinuousClock.Instant {
    let deadline = ContinuousClock.now + limit
    return { deadline }
}
