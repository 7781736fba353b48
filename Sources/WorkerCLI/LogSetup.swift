import Foundation
import Logging
import WorkerEngine

/// How log lines look: `text` for a terminal, `json` or `logfmt` for journald
/// and log shippers (one event per line, metadata as fields).
enum LogFormat: String, CaseIterable, Sendable {
    case text, json, logfmt
}

enum LogSetup {
    /// Logs go to stderr (journald captures it); stdout stays for command output.
    static func bootstrap(level text: String, format formatText: String = "text", setting: String,
                          formatSetting: String = "--log-format") throws {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(setting: setting, "'\(text)' is not one of \(allowed)")
        }
        guard let format = LogFormat(rawValue: formatText.lowercased()) else {
            let allowed = LogFormat.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(setting: formatSetting, "'\(formatText)' is not one of \(allowed)")
        }
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = format == .text
                ? StreamLogHandler.standardError(label: label) : StructuredLogHandler(label: label, format: format)
            handler.logLevel = level
            return handler
        }
    }
}

/// One line per event on stderr, as JSON or logfmt:
/// `ts=... level=error logger=workerd msg="job dead-lettered" job_id=42 kind=refund.requested reason=invalid_event`
struct StructuredLogHandler: LogHandler {
    let label: String
    let format: LogFormat
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        if let error = event.error { fields["error"] = "\(String(reflecting: error))" }
        let (level, message) = (event.level, event.message)
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let head: [(String, String)] = [("ts", time), ("level", level.rawValue), ("logger", label), ("msg", message.description)]
        let rest = fields.sorted { $0.key < $1.key }.map { ($0.key, "\($0.value)") }
        let line: String
        switch format {
        case .json:
            line = "{" + (head + rest).map { "\(Self.jsonString($0.0)):\(Self.jsonString($0.1))" }.joined(separator: ",") + "}"
        case .logfmt, .text:
            line = (head + rest).map { "\($0.0)=\(Self.logfmtValue($0.1))" }.joined(separator: " ")
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func jsonString(_ text: String) -> String {
        JSONValue.string(text).jsonText
    }

    static func logfmtValue(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" }
        return plain ? text : jsonString(text)
    }
}
