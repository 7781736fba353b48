/// Reads durations as operators write them: `250ms`, `30s`, `5m`, `6h`, `7d`;
/// a bare number is seconds.
public enum DurationParser {
    /// No setting needs more; past it, times and intervals leave the ranges
    /// that Int64 milliseconds and PostgreSQL's timestamps can hold.
    public static let longest = 100 * 365 * 86400.0

    public static func parse(_ text: String, setting: String) throws -> Duration {
        let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var number = Substring(trimmed)
        var scale = 1.0
        for unit in units where trimmed.hasSuffix(unit.suffix) {
            number = trimmed.dropLast(unit.suffix.count)
            scale = unit.seconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else {
            throw ConfigurationError(setting: setting, "'\(text)' is not a duration (examples: 250ms, 30s, 5m, 6h)")
        }
        guard value * scale <= longest else {
            throw ConfigurationError(setting: setting, "'\(text)' is longer than 100 years")
        }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }
}

import Foundation
