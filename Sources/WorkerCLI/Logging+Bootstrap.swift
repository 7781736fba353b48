import Foundation
import Logging
import WorkerEngine

enum LogSetup {
    /// Logs go to stderr (journald captures it); stdout stays for command output.
    static func bootstrap(level text: String, setting: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(setting: setting, "'\(text)' is not one of \(allowed)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return level
    }
}
