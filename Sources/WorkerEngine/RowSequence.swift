import PostgresNIO

extension PostgresRowSequence {
    /// Whether the statement answered any row: for a conditional write's
    /// `RETURNING`, whether it found what it was to change.
    func hasRows() async throws -> Bool {
        var any = false
        for try await _ in self { any = true }
        return any
    }

    /// Reads the rows to the end. postgres-nio returns the sequence once the
    /// row description arrives; an error raised while the statement runs
    /// after that (a division by zero, a lock or statement timeout) reaches
    /// only a reader of the rows. A statement whose rows are not wanted is
    /// still read, or its failure would pass for success.
    public func drain() async throws {
        for try await _ in self {}
    }
}
