import Foundation
import Testing
import WorkerEngine

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy(base: .seconds(1), rate: 2, cap: .seconds(60), maxAttempts: 10, maxAge: nil)

    @Test func theCeilingGrowsExponentiallyUpToTheCap() {
        let ceilings = (1...9).map { policy.ceiling(afterAttempt: $0).seconds }
        #expect(ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60])
        #expect(policy.ceiling(afterAttempt: 10_000) == .seconds(60))
    }

    @Test func delaysAreFullJitterWithinTheCeiling() {
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...8 {
            let samples = (0..<500).map { _ in policy.delay(afterAttempt: attempt, using: &generator).seconds }
            let ceiling = policy.ceiling(afterAttempt: attempt).seconds
            #expect(samples.allSatisfy { $0 >= 0 && $0 <= ceiling })
            // Full jitter spreads over the whole range: some near zero, some near the ceiling.
            #expect(samples.min()! < ceiling * 0.1)
            #expect(samples.max()! > ceiling * 0.9)
            #expect(Set(samples).count > 400)
        }
    }

    @Test func laterAttemptsWaitLongerOnAverage() {
        var generator = SystemRandomNumberGenerator()
        let means = (1...6).map { attempt in
            (0..<2000).map { _ in policy.delay(afterAttempt: attempt, using: &generator).seconds }.reduce(0, +) / 2000
        }
        #expect(zip(means, means.dropFirst()).allSatisfy { $0 < $1 })
    }

    @Test func policiesParseFromTheStepFunctionsLikeSyntax() throws {
        let parsed = try RetryPolicy.default.overridden(
            by: "base=250ms, rate=1.5, cap=2m, max-attempts=7, max-age=6h", setting: "--retry")
        #expect(parsed == RetryPolicy(base: .milliseconds(250), rate: 1.5, cap: .seconds(120), maxAttempts: 7, maxAge: .seconds(21600)))
        #expect(try RetryPolicy.default.overridden(by: "", setting: "x") == .default)
        #expect(RetryPolicy.default.timeout == .seconds(1800), "an attempt may take half an hour unless its kind says")
        #expect(try RetryPolicy.default.overridden(by: "timeout=2m", setting: "x").timeout == .seconds(120))
        #expect(try RetryPolicy.default.overridden(by: "timeout=none", setting: "x").timeout == nil)
    }

    /// What `workerd --check` prints is what `--retry` takes back.
    @Test func aPolicyIsWrittenAsItsSettingWouldBe() throws {
        #expect(RetryPolicy.default.description == "base=1s,rate=2,cap=5m,max-attempts=10,max-age=none,timeout=30m")
        for text in ["base=250ms,rate=1.5,cap=2m,max-attempts=7,max-age=6h,timeout=none",
                     "base=1500ms,rate=3,cap=90s,max-attempts=1,max-age=24h,timeout=1s"] {
            let policy = try RetryPolicy.default.overridden(by: text, setting: "x")
            #expect(policy.description == text)
            #expect(try RetryPolicy.default.overridden(by: policy.description, setting: "x") == policy)
        }
    }

    @Test func badPoliciesNameTheSettingAndTheProblem() {
        for (text, fragment) in [
            ("base=fast", "not a duration"), ("rate=0.5", "rate"), ("max-attempts=0", "max-attempts"),
            ("colour=red", "unknown key 'colour'"), ("base", "key=value"), ("base=10s,cap=1s", "below base"),
            ("base=0s", "at least 1ms"), ("timeout=500ms", "at least 1s"),
        ] {
            #expect {
                try RetryPolicy.default.overridden(by: text, setting: "--default-retry")
            } throws: { error in
                let message = "\(error)"
                return message.contains("--default-retry") && message.contains(fragment)
            }
        }
    }

    @Test func durationsReadLikeOperatorsWriteThem() throws {
        #expect(try DurationParser.parse("250ms", setting: "x") == .milliseconds(250))
        #expect(try DurationParser.parse("30s", setting: "x") == .seconds(30))
        #expect(try DurationParser.parse("5m", setting: "x") == .seconds(300))
        #expect(try DurationParser.parse("2h", setting: "x") == .seconds(7200))
        #expect(try DurationParser.parse("1d", setting: "x") == .seconds(86400))
        #expect(try DurationParser.parse("1.5", setting: "x") == .milliseconds(1500))
        #expect(throws: ConfigurationError.self) { try DurationParser.parse("-1s", setting: "x") }
        #expect(throws: ConfigurationError.self) { try DurationParser.parse("soon", setting: "x") }
    }
}
