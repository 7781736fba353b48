import Foundation
import Testing
import WorkerEngine
import WorkerHandlers
import WorkerTestSupport

/// `workerctl keys show`: what came of an event, looked up by its key.
@Suite(.timeLimit(.minutes(2))) struct KeyCommandsTests {
    @Test func aKeyShowsItsJobsOutcomeAndAMissingKeyFailsTheCommand() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES ('pay_1', 1000, 'EUR')")
            var ids: [String: Int64] = [:]
            for (refund, cents) in [("rf_1", 300), ("rf_2", 5000)] {
                ids[refund] = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: """
                    {"refund_id": "\(refund)", "payment_id": "pay_1", "amount_cents": \(cents), "currency": "EUR"}
                    """))
            }
            let jobs = try await db.queue.claim(queue: "default", limit: 10, visibilityTimeout: .seconds(30), workerID: "w")
            _ = try await BatchProcessor(client: db.client, handlers: .standard(), workerID: "w", logger: db.logger).process(jobs)
            try await db.execute("""
                INSERT INTO worker.idempotency_keys (key, kind, job_id, payload_hash, status, expires_at)
                VALUES ('old', 'noop', 7, 'h', 'completed', now() - interval '1 minute')
                """)

            let shown = try await runTool("workerctl", ["keys", "show", "refund:rf_1", "refund:rf_2", "old"], database: db)
            #expect(shown.status == 0, "\(shown)")
            let records = shown.stdout.components(separatedBy: "\n\n")
            #expect(records.count == 3, "\(shown)")
            #expect(records[0].contains("job id:     \(ids["rf_1"]!)") && records[0].contains("status:     completed"), "\(shown)")
            #expect(records[1].contains("job id:     \(ids["rf_2"]!)") && records[1].contains("status:     rejected"), "\(shown)")
            #expect(!records[0].contains("expired") && records[2].contains("(expired: "), "\(shown)")

            let json = try await runTool("workerctl", ["keys", "show", "refund:rf_1", "--json"], database: db)
            let parsed = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]], "\(json)")
            #expect(parsed.count == 1 && parsed[0]["job_id"] as? Int64 == ids["rf_1"] && parsed[0]["expired"] as? Bool == false)
            #expect(parsed[0]["result"] is [String: Any], "the result as JSON, not a string of it: \(json.stdout)")

            let missing = try await runTool("workerctl", ["keys", "show", "refund:rf_1", "refund:rf_9"], database: db)
            #expect(missing.status == 1 && missing.stderr.contains("no idempotency key 'refund:rf_9'"), "\(missing)")
            #expect(missing.stdout.contains("key:        refund:rf_1"), "the keys found are shown: \(missing)")

            let none = try await runTool("workerctl", ["keys", "show"], database: db)
            #expect(none.status == 64 && none.stderr.contains("Missing expected argument"), "\(none)")
        }
    }
}
