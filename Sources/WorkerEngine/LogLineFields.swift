import Logging

extension LogHandler {
    /// The fields a line of `event` carries, as text: the handler's metadata,
    /// its provider's (the job's, see `JobLogMetadata`), the event's own and
    /// its error, each later one winning over an earlier one of its name.
    public func fields(of event: LogEvent) -> [String: String] {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        if let error = event.error { fields["error"] = "\(String(reflecting: error))" }
        return fields.mapValues { "\($0)" }
    }
}
