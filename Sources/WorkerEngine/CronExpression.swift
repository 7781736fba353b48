import Foundation

/// A five-field cron expression (minute, hour, day of month, month, day of
/// week), read on a time zone's clock, as crontab(5) writes it: `*`, numbers,
/// ranges `1-5`, steps `*/15` and `1-30/2`, lists `1,15`, month and weekday
/// names (`JAN`, `MON-FRI`), Sunday as 0 or 7, and `@hourly`, `@daily`,
/// `@weekly`, `@monthly`, `@yearly`. When both the day of month and the day
/// of week are restricted, a day matching either runs, as cron does.
///
/// Daylight saving time: an expression whose hour field starts with `*`
/// (even `*/2`) follows real time, as cron's do, so it runs through both
/// passes of an hour the clocks repeat and has nothing to run in an hour they
/// jump over. One that names its hours runs at each time it names once: a
/// time the clocks jump over runs as much later as they jumped (02:30 at
/// 03:30, as java.time places it; cron would run it at 03:00), a time they
/// repeat runs at its first pass.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    private let minutes: Set<Int>
    private let hours: Set<Int>
    private let daysOfMonth: Set<Int>
    private let months: Set<Int>
    private let daysOfWeek: Set<Int>
    private let dayOfMonthRestricted: Bool
    private let dayOfWeekRestricted: Bool
    private let hourRestricted: Bool

    public init(_ text: String) throws(CronError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let expanded: String
        switch trimmed.lowercased() {
        case "@hourly": expanded = "0 * * * *"
        case "@daily", "@midnight": expanded = "0 0 * * *"
        case "@weekly": expanded = "0 0 * * 0"
        case "@monthly": expanded = "0 0 1 * *"
        case "@yearly", "@annually": expanded = "0 0 1 1 *"
        default:
            if trimmed.hasPrefix("@") { throw CronError(text, "unknown macro '\(trimmed)'") }
            expanded = trimmed
        }
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw CronError(text, "expected 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)")
        }
        description = trimmed
        minutes = try Self.parse(fields[0], "minute", 0...59, names: [:], in: text)
        hours = try Self.parse(fields[1], "hour", 0...23, names: [:], in: text)
        daysOfMonth = try Self.parse(fields[2], "day-of-month", 1...31, names: [:], in: text)
        months = try Self.parse(fields[3], "month", 1...12, names: Self.monthNames, in: text)
        // 7 is Sunday too.
        daysOfWeek = Set(try Self.parse(fields[4], "day-of-week", 0...7, names: Self.dayNames, in: text).map { $0 % 7 })
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
        hourRestricted = !fields[1].hasPrefix("*")
    }

    /// The first minute strictly after `date` that the expression matches on
    /// `timeZone`'s clock, or `nil` if none comes within eight years (`0 0 30 2 *`).
    public func next(after date: Date, in timeZone: TimeZone = .gmt) -> Date? {
        guard hourRestricted else { return firstMatch(after: date, on: Self.calendar(in: timeZone)) }
        // The wall clock's readings, searched as if they were UTC, then placed
        // in time. From the reading of `date` under the offset of a day before
        // if that is smaller: just after the clocks jumped, the readings they
        // jumped over still run.
        let utc = Self.calendar(in: Self.utc)
        let offset = min(timeZone.secondsFromGMT(for: date), timeZone.secondsFromGMT(for: date.addingTimeInterval(-86_400)))
        var reading = date.addingTimeInterval(Double(offset))
        let end = date.addingTimeInterval(8 * 366 * 86_400)
        while let match = firstMatch(after: reading, on: utc), match < end {
            let time = Self.time(ofReading: match, in: timeZone)
            if time > date { return time }
            reading = match  // the first pass of a repeated time, already gone
        }
        return nil
    }

    private static let utc = TimeZone(identifier: "UTC")!

    private static func calendar(in timeZone: TimeZone) -> Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }

    /// When the wall clock of `timeZone` shows `reading` (a reading written as
    /// a UTC time): its first pass if the clocks repeat it, and if they jump
    /// over it, as much later as they jumped.
    private static func time(ofReading reading: Date, in timeZone: TimeZone) -> Date {
        // A day either side of a reading lies either side of any transition near it.
        let before = timeZone.secondsFromGMT(for: reading.addingTimeInterval(-86_400))
        let after = timeZone.secondsFromGMT(for: reading.addingTimeInterval(86_400))
        let passes = Set([before, after]).map { reading.addingTimeInterval(-Double($0)) }
            .filter { timeZone.secondsFromGMT(for: $0) == Int(reading.timeIntervalSince($0)) }
        return passes.min() ?? reading.addingTimeInterval(-Double(before))
    }

    /// The first minute after `date` that matches, read on `calendar`'s clock.
    private func firstMatch(after date: Date, on calendar: Calendar) -> Date? {
        var time = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        let end = date.addingTimeInterval(8 * 366 * 86_400)
        while time < end {
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: time)
            let (year, month, day, hour, minute) = (c.year!, c.month!, c.day!, c.hour!, c.minute!)
            let skipTo: DateComponents?
            if !months.contains(month) {
                skipTo = DateComponents(year: year, month: month + 1, day: 1)
            } else if !dayMatches(day: day, weekday: c.weekday! - 1) {
                skipTo = DateComponents(year: year, month: month, day: day + 1)
            } else if !hours.contains(hour) {
                skipTo = DateComponents(year: year, month: month, day: day, hour: hour + 1)
            } else if !minutes.contains(minute) {
                skipTo = nil
            } else {
                return time
            }
            // Never back: a reading the clocks repeat may resolve to its first pass.
            time = max(skipTo.map { calendar.date(from: $0)! } ?? time, time.addingTimeInterval(60))
        }
        return nil
    }

    /// As Vixie cron: a field that starts with `*` (even `*/2`) does not
    /// widen the other; two restricted fields match either.
    private func dayMatches(day: Int, weekday: Int) -> Bool {
        let (dayOfMonth, dayOfWeek) = (daysOfMonth.contains(day), daysOfWeek.contains(weekday))
        return dayOfMonthRestricted && dayOfWeekRestricted ? dayOfMonth || dayOfWeek : dayOfMonth && dayOfWeek
    }

    private static let monthNames = Dictionary(uniqueKeysWithValues:
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"].enumerated().map { ($1, $0 + 1) })
    private static let dayNames = Dictionary(uniqueKeysWithValues:
        ["sun", "mon", "tue", "wed", "thu", "fri", "sat"].enumerated().map { ($1, $0) })

    private static func parse(
        _ field: String, _ name: String, _ range: ClosedRange<Int>, names: [String: Int], in text: String
    ) throws(CronError) -> Set<Int> {
        var values = Set<Int>()
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw CronError(text, "\(name) '\(part)' has more than one step") }
            var step = 1
            if pieces.count == 2 {
                guard let n = Int(pieces[1]), n >= 1 else {
                    throw CronError(text, "\(name) step '\(pieces[1])' is not a positive number")
                }
                step = n
            }
            let span: ClosedRange<Int>
            if pieces[0] == "*" {
                span = range
            } else {
                let bounds = pieces[0].split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2 else { throw CronError(text, "\(name) '\(part)' is not a value or a range") }
                let low = try value(bounds[0], name, range, names: names, in: text)
                let high = bounds.count == 2 ? try value(bounds[1], name, range, names: names, in: text) : nil
                if let high, high < low { throw CronError(text, "\(name) range '\(pieces[0])' ends before it starts") }
                // `5/15` means from 5 to the end in steps of 15, as cronie reads it.
                span = low...(high ?? (pieces.count == 2 ? range.upperBound : low))
            }
            values.formUnion(stride(from: span.lowerBound, through: span.upperBound, by: step))
        }
        return values
    }

    private static func value(
        _ text: Substring, _ name: String, _ range: ClosedRange<Int>, names: [String: Int], in expression: String
    ) throws(CronError) -> Int {
        if let number = Int(text) {
            guard range.contains(number) else {
                throw CronError(expression, "\(name) \(number) is outside \(range.lowerBound)-\(range.upperBound)")
            }
            return number
        }
        if let named = names[text.lowercased()] { return named }
        throw CronError(expression, "\(name) '\(text)' is not a number\(names.isEmpty ? "" : " or a name")")
    }
}

/// A cron expression that does not parse: what is wrong, and where.
public struct CronError: Error, Equatable, CustomStringConvertible {
    public let expression: String
    public let problem: String

    init(_ expression: String, _ problem: String) {
        self.expression = expression
        self.problem = problem
    }

    public var description: String { "cron '\(expression)': \(problem)" }
}
