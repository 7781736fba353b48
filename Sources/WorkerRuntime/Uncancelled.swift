/// Runs `body` to its end even when the calling task is cancelled.
///
/// Why: a worker's stop cancels its background loops, and cancelling a
/// statement in flight closes its pooled connection (`withLiveConnection`);
/// the pool may then lend that closing connection to the stop's own last
/// writes, which fail, and a write the server had committed would be made
/// again. So a loop's statement finishes (within the deadline it sets itself)
/// and the loop ends at its next wait.
func uncancelled<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
    await Task { await body() }.value
}
