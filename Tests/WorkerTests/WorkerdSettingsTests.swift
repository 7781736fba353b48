import Testing
import WorkerEngine
@testable import WorkerCLI

/// How workerd turns flags and environment into its settings.
@Suite struct WorkerdSettingsTests {
    func settings(_ arguments: [String], _ environment: [String: String] = [:]) throws -> WorkerdCommand.Settings {
        try WorkerdCommand.parse(arguments).settings(environment: environment)
    }

    @Test func idempotencyLifetimesComePerKindFromFlagsOrTheEnvironment() throws {
        let defaults = try settings([]).handlers
        #expect(defaults.idempotencyTTL(for: "refund.requested") == .seconds(24 * 3600))
        #expect(defaults.idempotencyTTL(for: "noop") == nil)

        let flags = try settings(["--idempotency-ttl", "refund.requested:2h"]).handlers
        #expect(flags.idempotencyTTL(for: "refund.requested") == .seconds(7200))
        #expect(flags.idempotencyTTL(for: "booking.requested") == .seconds(24 * 3600))

        let env = try settings([], ["WORKERD_IDEMPOTENCY_TTL": "refund.requested:1h; booking.requested:30m"]).handlers
        #expect(env.idempotencyTTL(for: "refund.requested") == .seconds(3600))
        #expect(env.idempotencyTTL(for: "booking.requested") == .seconds(1800))
    }

    /// The silence timeout outlasts the heartbeats: while every lane runs a
    /// long job, they are all the database answers.
    @Test func theSilenceTimeoutOutlastsTheHeartbeats() throws {
        #expect(try settings([]).worker.silenceTimeout == .seconds(30))
        #expect(try settings(["--visibility-timeout", "2m"]).worker.silenceTimeout == .seconds(120))
        #expect(try settings(["--silence-timeout", "45s"]).worker.silenceTimeout == .seconds(45))
        #expect(try settings([], ["WORKERD_SILENCE_TIMEOUT": "1m"]).worker.silenceTimeout == .seconds(60))
        for arguments in [["--silence-timeout", "20s"], ["--silence-timeout", "1m", "--visibility-timeout", "90s"]] {
            #expect {
                try settings(arguments)
            } throws: { error in
                (error as? ConfigurationError)?.setting == "--silence-timeout / WORKERD_SILENCE_TIMEOUT"
            }
        }
    }

    @Test func queuesGetLanesOfTheirOwnFromFlagsOrTheEnvironment() throws {
        let flags = try settings(["--queues", "billing,tenant=7,reports", "--queue-concurrency", "reports=2,tenant=7=3"]).worker
        #expect(flags.queueConcurrency == ["reports": 2, "tenant=7": 3])
        #expect(flags.lanes.count == 2 + 3 + 10)
        let env = try settings([], ["WORKERD_QUEUES": "a,b", "WORKERD_QUEUE_CONCURRENCY": "b=4", "WORKERD_CONCURRENCY": "3"]).worker
        #expect(env.lanes == [["b"], ["b"], ["b"], ["b"], ["a"], ["a"], ["a"]])
        for entries in ["reports", "reports=", "=2", "reports=two", "reports=0", "other=2", "reports=1001"] {
            #expect {
                try settings(["--queues", "reports", "--queue-concurrency", entries])
            } throws: { error in
                (error as? ConfigurationError)?.setting == "--queue-concurrency / WORKERD_QUEUE_CONCURRENCY"
            }
        }
    }

    @Test func badPerKindSettingsNameTheSetting() {
        for arguments in [
            ["--idempotency-ttl", "refund.requested:0s"], ["--idempotency-ttl", "2h"], ["--retry", ":base=1s"],
            // A kind no handler serves: a typo the jobs would never feel.
            ["--retry", "refund.requestd:base=1s"], ["--idempotency-ttl", "booking:1h"],
        ] {
            #expect {
                try settings(arguments)
            } throws: { error in
                guard let error = error as? ConfigurationError else { return false }
                return error.setting.contains(arguments[0])
            }
        }
    }
}
