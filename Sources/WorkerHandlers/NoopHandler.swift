import WorkerEngine

/// Kind `noop`: does nothing and succeeds. Measures the queue's own cost.
public struct NoopHandler: JobHandler {
    public init() {}
    public var idempotencyTTL: Duration? { nil }  // no effects to protect
    public var writesToDatabase: Bool { false }
    public func handle(_ job: Job, context: JobContext) async throws -> JobResult { .empty }
}
