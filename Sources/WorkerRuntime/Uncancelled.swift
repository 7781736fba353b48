/// Runs `body` to its end even when the calling task is cancelled.
///
/// Why: throughput counts taken for a write are given back when the write
/// fails, and a write cancelled after the server committed it would count
/// them twice. The body bounds itself with a deadline, which a dead link can
/// make longer than a stop's timeout; so only writes that must not be cut
/// run this way.
func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
    await Task { await body() }.value
}
