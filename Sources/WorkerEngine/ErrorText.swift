import NIOSSL
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
    if let tls = tlsErrorText(error) { return tls }
    return String(describing: error)
}

/// TLS failures in the words of libpq's sslmode, not BoringSSL's error stack.
private func tlsErrorText(_ error: any Error) -> String? {
    if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
        return "the server's certificate is not for this host name (sslmode=verify-full checks it)"
    }
    if case NIOSSLError.handshakeFailed(let detail)? = error as? NIOSSLError,
       String(describing: detail).contains("CERTIFICATE_VERIFY_FAILED") {
        return "certificate verify failed (CERTIFICATE_VERIFY_FAILED): the server's certificate is not signed by "
            + "a CA this client trusts; set sslrootcert to the CA's file"
    }
    return nil
}
