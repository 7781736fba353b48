/// Invalid configuration: names the setting so the operator knows what to fix.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The flag or environment variable at fault, e.g. `--concurrency / WORKERD_CONCURRENCY`.
    public var setting: String
    public var message: String

    public init(setting: String, _ message: String) {
        self.setting = setting
        self.message = message
    }

    public var description: String { "invalid \(setting): \(message)" }
}
