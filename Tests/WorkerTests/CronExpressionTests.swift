import Foundation
import Testing
import WorkerEngine

@Suite struct CronExpressionTests {
    let utc = ISO8601DateFormatter()

    func next(_ cron: String, after time: String) throws -> String? {
        try CronExpression(cron).next(after: utc.date(from: time)!).map { utc.string(from: $0) }
    }

    @Test func theNextRunIsTheFirstMatchingMinuteStrictlyAfter() throws {
        #expect(try next("* * * * *", after: "2026-11-23T10:00:00Z") == "2026-11-23T10:01:00Z")
        #expect(try next("* * * * *", after: "2026-11-23T10:00:59Z") == "2026-11-23T10:01:00Z")
        #expect(try next("*/15 * * * *", after: "2026-11-23T10:15:00Z") == "2026-11-23T10:30:00Z")
        #expect(try next("5/20 * * * *", after: "2026-11-23T10:26:00Z") == "2026-11-23T10:45:00Z")
        #expect(try next("0 2 * * *", after: "2026-11-23T02:00:00Z") == "2026-11-24T02:00:00Z")
        #expect(try next("30 9 * * MON-FRI", after: "2026-11-27T10:00:00Z") == "2026-11-30T09:30:00Z", "Friday to Monday")
        #expect(try next("0 0 1 * *", after: "2026-12-15T00:00:00Z") == "2027-01-01T00:00:00Z", "across a year")
        #expect(try next("@yearly", after: "2026-11-23T00:00:00Z") == "2027-01-01T00:00:00Z")
        #expect(try next("0 12 29 2 *", after: "2026-03-01T00:00:00Z") == "2028-02-29T12:00:00Z", "the next leap day")
        #expect(try next("0 0 * * 7", after: "2026-11-23T00:00:00Z") == "2026-11-29T00:00:00Z", "7 is Sunday")
        #expect(try next("0 8-18/4 * jan,Nov *", after: "2026-11-23T13:00:00Z") == "2026-11-23T16:00:00Z")
        #expect(try next("0 0 30 2 *", after: "2026-11-23T00:00:00Z") == nil, "never")
    }

    func next(_ cron: String, in zone: String, after time: String) throws -> String? {
        try CronExpression(cron).next(after: utc.date(from: time)!, in: #require(TimeZone(identifier: zone)))
            .map { utc.string(from: $0) }
    }

    @Test func aTimeZonesClockIsReadAcrossDaylightSavingTimeAsCronReadsIt() throws {
        #expect(try next("0 9 * * *", in: "Europe/Berlin", after: "2026-11-23T00:00:00Z") == "2026-11-23T08:00:00Z", "CET")
        #expect(try next("0 9 * * *", in: "Europe/Berlin", after: "2026-07-01T00:00:00Z") == "2026-07-01T07:00:00Z", "CEST")
        #expect(try next("0 9 * * MON-FRI", in: "America/New_York", after: "2026-11-27T15:00:00Z")
                == "2026-11-30T14:00:00Z", "Friday 10:00 EST, then Monday 09:00")
        #expect(try next("0 9 * * *", in: "Asia/Kolkata", after: "2026-11-23T00:00:00Z") == "2026-11-23T03:30:00Z")
        // Berlin's clocks jump from 02:00 to 03:00 on 29 March 2026 (01:00Z): 02:30
        // does not exist that day and runs an hour later, 03:30 CEST, once.
        #expect(try next("30 2 * * *", in: "Europe/Berlin", after: "2026-03-28T12:00:00Z") == "2026-03-29T01:30:00Z")
        #expect(try next("30 2 * * *", in: "Europe/Berlin", after: "2026-03-29T01:30:00Z") == "2026-03-30T00:30:00Z")
        #expect(try next("0,30 2 * * *", in: "Europe/Berlin", after: "2026-03-28T12:00:00Z") == "2026-03-29T01:00:00Z")
        #expect(try next("0,30 2 * * *", in: "Europe/Berlin", after: "2026-03-29T01:00:00Z") == "2026-03-29T01:30:00Z",
                "both times the clocks jumped over run, each an hour later")
        #expect(try next("30 2 * * *", in: "America/New_York", after: "2026-03-08T07:10:00Z") == "2026-03-08T07:30:00Z",
                "set at 03:10 EDT, just after the jump: 02:30 still runs, at 03:30")
        // They go back from 03:00 to 02:00 on 25 October 2026 (01:00Z): 02:30 comes
        // twice (00:30Z and 01:30Z) and runs at the first only.
        #expect(try next("30 2 * * *", in: "Europe/Berlin", after: "2026-10-24T12:00:00Z") == "2026-10-25T00:30:00Z")
        #expect(try next("30 2 * * *", in: "Europe/Berlin", after: "2026-10-25T00:30:00Z") == "2026-10-26T01:30:00Z")
        #expect(try next("30 2 * * *", in: "Europe/Berlin", after: "2026-10-25T01:10:00Z") == "2026-10-26T01:30:00Z",
                "set during the second pass: today's run has been")
        // An hour field of * follows real time: both passes of the repeated hour, and
        // from 01:30 CET straight to 03:00 CEST in spring.
        #expect(try next("*/30 * * * *", in: "Europe/Berlin", after: "2026-10-25T00:30:00Z") == "2026-10-25T01:00:00Z")
        #expect(try next("*/30 * * * *", in: "Europe/Berlin", after: "2026-10-25T01:00:00Z") == "2026-10-25T01:30:00Z")
        #expect(try next("*/30 * * * *", in: "Europe/Berlin", after: "2026-03-29T00:30:00Z") == "2026-03-29T01:00:00Z")
        #expect(try next("0 */2 * * *", in: "Europe/Berlin", after: "2026-10-25T00:00:00Z") == "2026-10-25T01:00:00Z",
                "*/2 too: 02:00 CEST, then 02:00 CET")
    }

    @Test func aRestrictedDayOfMonthAndDayOfWeekMatchEitherAsCronDoes() throws {
        // The 13th or a Friday: after Thursday 26 November comes Friday the 27th; after
        // Friday 11 December, Sunday the 13th (before Friday the 18th).
        #expect(try next("0 0 13 * 5", after: "2026-11-26T00:00:00Z") == "2026-11-27T00:00:00Z")
        #expect(try next("0 0 13 * 5", after: "2026-12-11T00:00:00Z") == "2026-12-13T00:00:00Z")
        #expect(try next("0 0 */10 * *", after: "2026-11-23T00:00:00Z") == "2026-12-01T00:00:00Z", "*/10 is days 1, 11, 21, 31")
    }

    @Test(arguments: [
        ("", "expected 5 fields"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month 0 is outside 1-31"),
        ("* * * 13 *", "month 13 is outside 1-12"),
        ("* * * * 8", "day-of-week 8 is outside 0-7"),
        ("*/0 * * * *", "minute step '0' is not a positive number"),
        ("5-1 * * * *", "minute range '5-1' ends before it starts"),
        ("* * * * FUNDAY", "day-of-week 'FUNDAY' is not a number or a name"),
        ("a * * * *", "minute 'a' is not a number"),
        ("1,,2 * * * *", "minute '' is not a number"),
        ("@reboot", "unknown macro '@reboot'"),
    ])
    func aBadExpressionSaysWhatIsWrong(cron: String, problem: String) {
        #expect(throws: CronError.self) { try CronExpression(cron) }
        do {
            _ = try CronExpression(cron)
        } catch {
            #expect(error.description.contains(problem), "\(error)")
        }
    }
}
