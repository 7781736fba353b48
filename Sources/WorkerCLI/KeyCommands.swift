import ArgumentParser
import Foundation
import WorkerEngine

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Look up idempotency keys: what came of the event processed under each.",
        subcommands: [KeysShowCommand.self])
}

struct KeysShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show the outcome recorded under idempotency keys.",
        discussion: """
            A job's key is its idempotency_key, else the one its handler derives from the event (refund:<refund_id>, \
            booking:<request_id>), else <kind>:<sha256 of the payload>. A key is kept for its kind's \
            --idempotency-ttl (default 24h) after the job that took it; a key not found was never processed to an \
            outcome, or has expired and been swept. Exits 1 if any key is not found.
            """)

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "One or more keys, e.g. refund:rf_1.") var keys: [String]
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let keys = self.keys
        let records = try await database.withClient { client, logger in
            try await IdempotencyRecords(client: client, logger: logger).find(keys)
        }
        if json {
            try JSONOutput.print(records)
        } else {
            let time = ISO8601DateFormatter()
            if !records.isEmpty { print(records.map { record in
                """
                key:        \(record.key)
                kind:       \(record.kind)
                job id:     \(record.jobId)
                status:     \(record.status)
                result:     \(record.result)
                created at: \(time.string(from: record.createdAt))
                expires at: \(time.string(from: record.expiresAt))\(record.expired
                    ? " (expired: a job with this key is processed again; the sweeper deletes it)" : "")
                """
            }.joined(separator: "\n\n")) }
        }
        let missing = keys.filter { key in !records.contains { $0.key == key } }
        if !missing.isEmpty {
            throw CommandFailure(
                "no idempotency key \(missing.map { "'\($0)'" }.joined(separator: ", ")): never processed to an outcome, "
                    + "or expired and swept")
        }
    }
}
