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
            var handler = StructuredLogHandler(label: label, format: format)
            handler.logLevel = level
            return handler
        }
    }
}

/// One line per event on stderr, as JSON, logfmt
/// (`ts=... level=error logger=workerd msg="job dead-lettered" job_id=42 kind=refund.requested reason=invalid_event`)
/// or text (`2026-11-27T07:30:00.000Z error workerd: job_id=42 kind=refund.requested job dead-lettered`).
/// In every format a line break in a message or a value is escaped: a kind
/// or a payload's field cannot forge a log line of its own.
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
        let line = Self.line(format: format, time: Date(), level: event.level, label: label,
                             message: event.message.description, fields: fields(of: event))
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func line(format: LogFormat, time: Date, level: Logger.Level, label: String, message: String,
                     fields: [String: String]) -> String {
        let stamp = time.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let rest = fields.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        switch format {
        case .json:
            let head = [("ts", stamp), ("level", level.rawValue), ("logger", label), ("msg", message)]
            return "{" + (head + rest).map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}"
        case .logfmt:
            let head = [("ts", stamp), ("level", level.rawValue), ("logger", label), ("msg", message)]
            return (head + rest).map { "\($0.0)=\(logfmtValue($0.1))" }.joined(separator: " ")
        case .text:
            // As swift-log's stream handler writes it, with its values quoted where logfmt would.
            return "\(stamp) \(level.rawValue) \(label):"
                + rest.map { " \($0.0)=\(logfmtValue($0.1))" }.joined() + " " + escapingLineBreaks(message)
        }
    }

    /// The text with control characters written as escapes; unchanged when it has none.
    static func escapingLineBreaks(_ text: String) -> String {
        func isControl(_ s: Unicode.Scalar) -> Bool { s.value < 0x20 || (0x7F...0x9F).contains(s.value) }
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where isControl(scalar): out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func jsonString(_ text: String) -> String {
        JSONValue.string(text).jsonText
    }

    static func logfmtValue(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy {
            $0.value > 0x20 && $0.value != 0x7F && $0 != "\"" && $0 != "=" && $0 != "\\"
        }
        return plain ? text : jsonString(text)
    }
}
