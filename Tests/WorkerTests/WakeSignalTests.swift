import Testing
@testable import WorkerRuntime
import WorkerTestSupport

/// A notification wakes one idle lane, not all of them.
@Suite(.timeLimit(.minutes(1))) struct WakeSignalTests {
    @Test func aSignalWakesOneWaitingLaneAndCloseWakesTheRest() async throws {
        let wake = WakeSignal()
        let generation = wake.generation
        let woken = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    await wake.wait(since: generation, upTo: .seconds(60))
                    _ = woken.increment()
                }
            }
            try await eventually("three lanes to wait") { wake.waiting == 3 }
            wake.signal()
            #expect(wake.waiting == 2)
            try await group.next()
            #expect(woken.current == 1)
            wake.close()
            try await group.waitForAll()
            #expect(woken.current == 3)
        }
    }

    @Test func aLaneThatWaitsAfterASignalItMissedReturnsAtOnce() async {
        let wake = WakeSignal()
        let generation = wake.generation
        wake.signal()  // nobody waits yet: it lands between a lane's claim and its wait
        // Missed, the wait would outlast the suite's time limit and fail it.
        await wake.wait(since: generation, upTo: .seconds(3600))
        #expect(wake.waiting == 0)
    }
}
