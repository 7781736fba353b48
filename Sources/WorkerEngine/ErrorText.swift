import PostgresNIO

/// An error as an operator can act on it. PSQLError's `description` hides the
/// server's message ("Generic description to prevent accidental leakage...")
/// and its `debugDescription` carries the statement's bound values; this keeps
/// the message and SQLSTATE only, or what stopped the connection.
public func errorText(_ error: any Error) -> String {
    if let psql = error as? PSQLError {
        if let message = psql.serverInfo?[.message] {
            return message + (psql.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
        }
        if let underlying = psql.underlying { return errorText(underlying) }
        return "PostgreSQL client error: \(psql.code)"
    }
    return String(describing: error)
}
