import PostgresNIO
import Testing
@testable import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct LiveConnectionTests {
    @Test func aPooledConnectionKeepsNothingOfTheStatementsItFinished() async throws {
        try await withTestDatabase { db in
            try await db.client.withConnection { connection in
                for _ in 0..<200 {
                    try await connection.failingOnClose { connection in
                        for try await one in try await connection.query("SELECT 1", logger: db.logger).decode(Int.self) {
                            #expect(one == 1)
                        }
                    }
                }
                // One close callback for the connection, no waiter left behind.
                #expect(CloseWatches.shared.count(for: connection) == 0)
            }
        }
    }
}
