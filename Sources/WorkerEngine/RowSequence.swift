import PostgresNIO

extension PostgresRowSequence {
    /// Whether the statement answered any row: for a conditional write's
    /// `RETURNING`, whether it found what it was to change.
    func hasRows() async throws -> Bool {
        var any = false
        for try await _ in self { any = true }
        return any
    }
}
