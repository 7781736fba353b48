import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import WorkerEngine
import WorkerTestSupport

/// The Prometheus endpoint and the JSON logs of a real workerd.
@Suite(.timeLimit(.minutes(2))) struct MetricsTests {
    func get(_ url: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// The value of the sample whose name and labels are exactly `series`.
    func sample(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test func countersByKindAndOutcomeHandlerHistogramQueueGaugesAndJSONLogLines() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES ('pay_1', 1000, 'EUR')")
            let refund = #"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 300, "currency": "EUR"}"#
            let tooMuch = #"{"refund_id": "rf_2", "payment_id": "pay_1", "amount_cents": 5000, "currency": "EUR"}"#
            for payload in [refund, refund, tooMuch, #"{"refund_id": 7}"#] {
                _ = try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: payload))
            }
            // A job whose attempt outlives its timeout, in a queue of its own.
            _ = try await db.queue.enqueue(NewJob(queue: "slow", kind: "demo.task", payload: #"{"work_ms": 60000}"#))
            // A paused queue with a job an hour old: the age gauge must show it.
            try await QueuePauses(client: db.client, logger: db.logger).pause("held")
            try await QueueLimits(client: db.client, logger: db.logger).set("held", maxInFlight: 3, rate: .init(perSecond: 2.5))
            try await db.execute("INSERT INTO worker.jobs (queue, kind, created_at) VALUES ('held', 'noop', now() - interval '1 hour')")
            // A schedule due (its job goes to a queue no worker serves), one whose cron cannot
            // run, and one due whose last run's job still waits.
            try await db.execute("""
                INSERT INTO worker.schedules (name, cron, queue, kind, next_run_at, skip_while_waiting)
                VALUES ('due', '@yearly', 'later', 'noop', now() - interval '1 minute', false),
                       ('typo', '61 * * * *', 'later', 'noop', NULL, false),
                       ('skipping', '@yearly', 'later', 'noop', now() - interval '1 minute', true)
                """)
            try await db.execute("""
                INSERT INTO worker.jobs (queue, kind, job_key)
                SELECT 'later', 'noop', 'schedule:skipping:' || run_key FROM worker.schedules WHERE name = 'skipping'
                """)

            let workerd = try ToolProcess("workerd", [
                "--worker-id", "metrics", "--queues", "default,held,slow", "--log-format", "json", "--metrics-address", "127.0.0.1:0",
                "--retry", "demo.task:timeout=1s,max-attempts=1",
            ], environment: ["DATABASE_URL": db.url])
            var endpoint = ""
            try await eventually("the metrics endpoint") {
                guard let line = workerd.stderrSoFar.split(separator: "\n").first(where: { $0.contains("metrics endpoint listening") }),
                      let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String],
                      let address = object["address"] else { return false }
                endpoint = address
                return true
            }
            try await eventually("the default and slow queues to drain") {
                try await db.int("SELECT count(*)::int FROM worker.jobs WHERE queue IN ('default', 'slow')") == 0
            }
            var text = ""
            try await eventually("the queue gauges") {
                text = try await get(endpoint).body
                return sample(text, #"worker_queue_oldest_ready_age_seconds{queue="held"}"#) ?? 0 >= 3600
                    && sample(text, #"worker_queue_ready_jobs{queue="default"}"#) == 0
                    && sample(text, "worker_schedules_broken") == 1
                    // Counted just after the settlement's commit, which emptied the slow queue.
                    && sample(text, #"worker_jobs_total{queue="slow",kind="demo.task",outcome="dead_lettered"}"#) == 1
            }
            let refunds = #"queue="default",kind="refund.requested""#
            for (outcome, count) in [("done", 1.0), ("duplicate", 1), ("rejected", 1), ("dead_lettered", 1)] {
                #expect(sample(text, #"worker_jobs_total{\#(refunds),outcome="\#(outcome)"}"#) == count, "\(outcome)\n\(text)")
            }
            #expect(sample(text, #"worker_dead_letters_total{\#(refunds),reason="invalid_event"}"#) == 1)
            #expect(sample(text, #"worker_jobs_claimed_total{queue="default"}"#) == 4)
            #expect(sample(text, #"worker_handler_duration_seconds_count{kind="refund.requested"}"#) == 2)  // done and rejected
            #expect(sample(text, #"worker_queue_paused{queue="held"}"#) == 1)
            #expect(sample(text, #"worker_queue_max_in_flight{queue="held"}"#) == 3)
            #expect(sample(text, #"worker_queue_max_in_flight{queue="default"}"#) == 0)
            #expect(sample(text, #"worker_queue_max_per_second{queue="held"}"#) == 2.5)
            #expect(sample(text, #"worker_queue_max_per_second{queue="default"}"#) == 0)
            #expect(sample(text, #"worker_queue_ready_jobs{queue="held"}"#) == 1)
            #expect(sample(text, "worker_leases_held") == 0)
            #expect(sample(text, #"worker_build_info{version="\#(ProductVersion.number)"}"#) == 1, "\(text)")
            #expect(sample(text, #"worker_scheduled_runs_total{schedule="due"}"#) == 1, "\(text)")
            #expect(sample(text, #"worker_scheduled_runs_skipped_total{schedule="skipping"}"#) == 1, "\(text)")
            #expect(sample(text, #"worker_scheduled_runs_total{schedule="skipping"}"#) == nil, "\(text)")
            #expect(sample(text, #"worker_attempt_timeouts_total{queue="slow",kind="demo.task"}"#) == 1, "\(text)")
            // Counters that alerts watch are there at 0 before their first count.
            #expect(sample(text, "worker_batch_errors_total") == 0 && sample(text, "worker_heartbeat_failures_total") == 0, "\(text)")
            #expect(text.contains("# TYPE worker_handler_duration_seconds histogram"))
            // Every metric the deploy's alerting rules and dashboard watch is one workerd serves.
            for file in ["deploy/worker-alerts.yml", "deploy/grafana-dashboard.json"] {
                let rules = try String(contentsOf: repositoryRoot.appendingPathComponent(file), encoding: .utf8)
                let watched = Set(rules.matches(of: /worker_[a-z_]+/).map { String($0.output).replacing(/_bucket$/, with: "") })
                #expect(watched.count >= 7, "\(file): \(watched)")
                for name in watched { #expect(text.contains("# TYPE \(name) "), "\(file) watches \(name)\n\(text)") }
            }
            #expect(try await get(endpoint.replacingOccurrences(of: "/metrics", with: "/other")).status == 404)

            workerd.send(SIGTERM)
            let result = await workerd.result()
            #expect(result.status == 0, "\(result)")
            let lines = result.stderr.split(separator: "\n")
            let events = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String] }
            #expect(events.count == lines.count, "every log line is a JSON object:\n\(result.stderr)")
            let dead = try #require(events.first { $0["msg"] == "job dead-lettered" })
            for field in ["ts", "level", "job_id", "kind", "attempt", "lease", "reason", "error", "worker"] {
                #expect(dead[field] != nil, "\(field) missing in \(dead)")
            }
            #expect(dead["reason"] == "invalid_event" && dead["level"] == "error")
        }
    }

    @Test func aTakenMetricsPortStopsStartupNamingTheSetting() async throws {
        try await withTestDatabase { db in
            // On IPv6 loopback: the address is logged bracketed, as a URL and the flag write it.
            let first = try ToolProcess("workerd", ["--worker-id", "a", "--metrics-address", "[::1]:0", "--log-format", "logfmt"],
                                        environment: ["DATABASE_URL": db.url])
            var address = ""
            try await eventually("the first endpoint") {
                guard let line = first.stderrSoFar.split(separator: "\n").first(where: { $0.contains("metrics endpoint listening") }),
                      let field = line.split(separator: " ").first(where: { $0.hasPrefix("address=") }) else { return false }
                address = field.dropFirst("address=http://".count).replacingOccurrences(of: "/metrics", with: "")
                return true
            }
            #expect(address.hasPrefix("[::1]:"), "\(address)")
            let second = try await runTool("workerd", ["--worker-id", "b", "--metrics-address", address], database: db)
            #expect(second.status == 1 && second.stderr.contains("--metrics-address") && second.stderr.contains(address), "\(second)")
            first.send(SIGTERM)
            #expect(await first.result().status == 0)
        }
    }
}
