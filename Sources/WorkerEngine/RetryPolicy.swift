/// How a job kind is retried, like a Step Functions `Retry` block: the n-th
/// retry waits a random delay in `0 ... min(cap, base * rate^(n-1))` ("full
/// jitter"), so that a fleet of failing jobs spreads out instead of retrying in step.
public struct RetryPolicy: Sendable, Equatable, CustomStringConvertible {
    public var base: Duration
    public var rate: Double
    public var cap: Duration
    public var maxAttempts: Int
    /// Jobs older than this are dead-lettered as `expired` instead of run (the
    /// Lambda maximum event age); `nil` keeps them however old.
    public var maxAge: Duration?
    /// How long one attempt may run (the Lambda timeout): past it the worker
    /// abandons the attempt's batch and the attempt fails as retryable. A
    /// handler that hangs would otherwise hold its lane, its leases extended
    /// by the heartbeat, for good. `nil`: no limit.
    public var timeout: Duration?

    public static let `default` = RetryPolicy(base: .seconds(1), rate: 2, cap: .seconds(300), maxAttempts: 10, maxAge: nil)

    public init(
        base: Duration, rate: Double, cap: Duration, maxAttempts: Int, maxAge: Duration?,
        timeout: Duration? = .seconds(1800)
    ) {
        self.base = base
        self.rate = rate
        self.cap = cap
        self.maxAttempts = maxAttempts
        self.maxAge = maxAge
        self.timeout = timeout
    }

    /// Every key, as `--retry` takes it: `base=1s,rate=2,cap=5m,max-attempts=10,max-age=none,timeout=30m`.
    public var description: String {
        let rate = rate == rate.rounded() && abs(rate) < 1e15 ? String(Int(rate)) : String(rate)
        return "base=\(base.settingText),rate=\(rate),cap=\(cap.settingText),max-attempts=\(maxAttempts),"
            + "max-age=\(maxAge?.settingText ?? "none"),timeout=\(timeout?.settingText ?? "none")"
    }

    /// The largest delay the retry after `attempt` failed attempts may wait.
    public func ceiling(afterAttempt attempt: Int) -> Duration {
        let exponent = Double(max(attempt - 1, 0))
        let seconds = base.seconds * Foundation.pow(rate, exponent)
        guard seconds.isFinite, seconds < cap.seconds else { return cap }
        return .seconds(seconds)
    }

    /// A full-jitter delay for the retry after `attempt` failed attempts.
    public func delay(afterAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = ceiling(afterAttempt: attempt).seconds
        guard ceiling > 0 else { return .zero }
        return .seconds(Double.random(in: 0...ceiling, using: &generator))
    }

    public func delay(afterAttempt attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, using: &generator)
    }

    /// Parses `base=1s,rate=2,cap=5m,max-attempts=10,max-age=6h,timeout=30m`, each key optional,
    /// starting from `self`. `setting` names the flag in errors.
    public func overridden(by text: String, setting: String) throws -> RetryPolicy {
        var policy = self
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else {
                throw ConfigurationError(setting: setting, "expected key=value, got '\(part)'")
            }
            let (key, value) = (pair[0], pair[1])
            switch key {
            case "base": policy.base = try DurationParser.parse(value, setting: "\(setting) base")
            case "cap": policy.cap = try DurationParser.parse(value, setting: "\(setting) cap")
            case "rate":
                guard let rate = Double(value), rate >= 1, rate <= 100 else {
                    throw ConfigurationError(setting: setting, "rate '\(value)' must be a number from 1 to 100")
                }
                policy.rate = rate
            case "max-attempts", "max_attempts":
                guard let attempts = Int(value), attempts >= 1 else {
                    throw ConfigurationError(setting: setting, "max-attempts '\(value)' must be a positive integer")
                }
                policy.maxAttempts = attempts
            case "max-age", "max_age":
                policy.maxAge = value == "none" ? nil : try DurationParser.parse(value, setting: "\(setting) max-age")
            case "timeout":
                policy.timeout = value == "none" ? nil : try DurationParser.parse(value, setting: "\(setting) timeout")
                // A lane notices a passed deadline up to a second late (its ticker).
                if let timeout = policy.timeout, timeout < .seconds(1) {
                    throw ConfigurationError(setting: setting, "timeout \(timeout) must be at least 1s, or none")
                }
            default:
                throw ConfigurationError(
                    setting: setting, "unknown key '\(key)' (expected base, rate, cap, max-attempts, max-age, timeout)")
            }
        }
        // No delay at all would repeat a failure at once, max-attempts times
        // in a row, against whatever is failing.
        guard policy.base >= .milliseconds(1) else {
            throw ConfigurationError(setting: setting, "base \(policy.base) must be at least 1ms")
        }
        guard policy.cap >= policy.base else {
            throw ConfigurationError(setting: setting, "cap \(policy.cap) is below base \(policy.base)")
        }
        return policy
    }
}

import Foundation

extension Duration {
    /// The duration in seconds as a floating-point number.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }

    /// `30m`, `90s`, `1500ms`: as a setting would be written.
    public var settingText: String {
        let ms = milliseconds
        for (unit, size) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1000)] where ms % size == 0 && ms > 0 {
            return "\(ms / size)\(unit)"
        }
        return "\(ms)ms"
    }

    /// Whole milliseconds, rounded up so that a non-zero delay never becomes zero.
    public var milliseconds: Int64 {
        let (s, attoseconds) = components
        return s * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
