import WorkerEngine

/// Kind `demo.task`: the demo's stand-in for real work. Its payload says how
/// it behaves, so the demo can show retries and dead letters:
/// `{"work_ms": 20, "fail_rate": 0.2, "poison": false}`.
public struct DemoHandler: JobHandler {
    struct Payload: FieldDecodable {
        var work_ms: Int64?
        var fail_rate: Double?
        var poison: Bool?

        init(_ fields: EventFields) throws {
            work_ms = try fields.optional("work_ms", fields.integer)
            fail_rate = try fields.optional("fail_rate", fields.number)
            poison = try fields.optional("poison", fields.bool)
        }
    }

    public init() {}

    /// Demo events have no effects, and the demo sends identical payloads on purpose.
    public var idempotencyTTL: Duration? { nil }
    public var writesToDatabase: Bool { false }

    public func handle(_ job: Job, context: JobContext) async throws -> JobResult {
        let payload = try job.decode(Payload.self)
        let work = payload.work_ms ?? 0
        guard (0...60_000).contains(work) else { throw JobError.invalidEvent("work_ms \(work) is not in 0...60000") }
        if let rate = payload.fail_rate, !(0...1).contains(rate) {
            throw JobError.invalidEvent("fail_rate \(rate) is not in 0...1")
        }
        if work > 0 { try await Task.sleep(for: .milliseconds(work)) }
        if payload.poison == true { throw JobError.nonRetryable("demo.task marked as poison") }
        if let rate = payload.fail_rate, Double.random(in: 0..<1) < rate {
            throw JobError.retryable("demo.task failed at random (fail_rate \(rate))")
        }
        return .empty
    }
}
