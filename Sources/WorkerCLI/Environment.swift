import Foundation
import WorkerEngine

/// Reads a setting from its flag, else its environment variable, else a
/// default, and names both in any error, so that a bad value in a systemd
/// environment file is as easy to find as a bad flag.
struct SettingReader {
    var environment: [String: String]

    func string(_ flag: String?, _ name: String, env: String, default value: String) -> String {
        flag ?? environment[env].flatMap { $0.isEmpty ? nil : $0 } ?? value
    }

    func int(_ flag: String?, _ name: String, env: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        let text = string(flag, name, env: env, default: String(value))
        guard let number = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(number) else {
            throw ConfigurationError(
                setting: "--\(name) / \(env)", "'\(text)' is not an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    func duration(_ flag: String?, _ name: String, env: String, default value: String) throws -> Duration {
        try DurationParser.parse(string(flag, name, env: env, default: value), setting: "--\(name) / \(env)")
    }

    /// A duration whose default is derived elsewhere: `nil` when neither the
    /// flag nor the environment gives one.
    func duration(_ flag: String?, _ name: String, env: String) throws -> Duration? {
        let text = string(flag, name, env: env, default: "")
        return text.isEmpty ? nil : try DurationParser.parse(text, setting: "--\(name) / \(env)")
    }

    func list(_ flag: String?, _ name: String, env: String, default value: String) -> [String] {
        string(flag, name, env: env, default: value)
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}
