import ArgumentParser
import Foundation

/// What a job is made of, as `enqueue` and `schedules set` take it.
struct JobDefinitionOptions: ParsableArguments {
    @Option(help: "Job kind, e.g. noop or demo.task.") var kind: String
    @Option(help: "Queue name.") var queue = "default"
    @Option(help: "JSON payload.") var payload = "{}"
    @Option(parsing: .unconditional, help: "Priority; lower runs first.") var priority = 0
    @Option(parsing: .unconditional, help: "Attempts before dead-lettering (default: the kind's retry policy).") var maxAttempts: Int?

    func validate() throws {
        guard !queue.isEmpty, queue.count <= 128 else { throw ValidationError("--queue must have 1 to 128 characters") }
        guard !kind.isEmpty, kind.count <= 128 else { throw ValidationError("--kind must have 1 to 128 characters") }
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(payload.utf8), options: [.fragmentsAllowed]) else {
            throw ValidationError("--payload is not valid JSON: \(payload)")
        }
        if Self.holdsNUL(parsed) {
            throw ValidationError("--payload has \\u0000 in a string, which PostgreSQL's jsonb cannot store")
        }
        guard (Int(Int16.min)...Int(Int16.max)).contains(priority) else {
            throw ValidationError("--priority must be in \(Int16.min)...\(Int16.max)")
        }
        if let maxAttempts, !(1...Int(Int32.max)).contains(maxAttempts) {
            throw ValidationError("--max-attempts must be in 1...\(Int32.max)")
        }
    }

    private static func holdsNUL(_ value: Any) -> Bool {
        switch value {
        case let text as String: text.contains("\u{0}")
        case let array as [Any]: array.contains(where: holdsNUL)
        case let object as [String: Any]: object.contains { $0.key.contains("\u{0}") || holdsNUL($0.value) }
        default: false
        }
    }
}
