import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import PostgresNIO
import ServiceLifecycle
import WorkerEngine
import WorkerHandlers
import WorkerRuntime

/// `workerd`: claims and processes jobs until SIGTERM or SIGINT.
public struct WorkerdCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "workerd",
        abstract: "Process jobs from the PostgreSQL queue until stopped (SIGTERM/SIGINT drain gracefully).",
        discussion: """
            Every option can also be set in the environment (flags win), which is how the systemd \
            unit configures it: DATABASE_URL or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE/PGSSLMODE, \
            WORKERD_QUEUES, WORKERD_CONCURRENCY, WORKERD_QUEUE_CONCURRENCY, WORKERD_BATCH_SIZE, WORKERD_VISIBILITY_TIMEOUT, \
            WORKERD_POLL_INTERVAL, WORKERD_STOP_TIMEOUT, WORKERD_SILENCE_TIMEOUT, WORKERD_WORKER_ID, WORKERD_LOG_LEVEL, \
            WORKERD_LOG_FORMAT, WORKERD_METRICS_ADDRESS, WORKERD_SWEEP_INTERVAL, WORKERD_DEFAULT_RETRY, WORKERD_RETRY and \
            WORKERD_IDEMPOTENCY_TTL (these two take several KIND:VALUE separated by ';').

            A retry policy is base=DURATION,rate=NUMBER,cap=DURATION,max-attempts=N,max-age=DURATION|none,\
            timeout=DURATION|none, each key optional; the default is \
            base=1s,rate=2,cap=300s,max-attempts=10,max-age=none,timeout=30m. An attempt past its timeout is \
            abandoned with its batch and fails as retryable.
            """,
        version: ProductVersion.description)

    @Option(help: "postgres://user:password@host:port/database?sslmode=... (env DATABASE_URL).")
    var databaseURL: String?
    @Option(help: "Comma-separated queues to work (env WORKERD_QUEUES, default: default).")
    var queues: String?
    @Option(parsing: .unconditional, help: "Lanes shared by the queues without --queue-concurrency, each processing a batch at a time on one connection (env WORKERD_CONCURRENCY, default 10).")
    var concurrency: String?
    @Option(help: "QUEUE=N,...: lanes of a queue's own, serving it alone, so that its slow jobs cannot take the other queues' lanes (env WORKERD_QUEUE_CONCURRENCY).")
    var queueConcurrency: String?
    @Option(parsing: .unconditional, help: "Jobs claimed and committed together (env WORKERD_BATCH_SIZE, default 10).")
    var batchSize: String?
    @Option(parsing: .unconditional, help: "Lease length before a claimed job is given to another worker (env WORKERD_VISIBILITY_TIMEOUT, default 30s).")
    var visibilityTimeout: String?
    @Option(parsing: .unconditional, help: "Look for due jobs this often without a notification, on average (env WORKERD_POLL_INTERVAL, default 1s).")
    var pollInterval: String?
    @Option(parsing: .unconditional, help: "Time allowed to drain on SIGTERM (env WORKERD_STOP_TIMEOUT, default 25s).")
    var stopTimeout: String?
    @Option(parsing: .unconditional, help: "Abandon batches after the database stayed silent this long (env WORKERD_SILENCE_TIMEOUT, default 30s or the visibility timeout if longer).")
    var silenceTimeout: String?
    @Option(help: "Name written to leased_by (env WORKERD_WORKER_ID, default HOST:PID).")
    var workerID: String?
    @Option(help: "Sweep expired idempotency keys this often, or 'off' (env WORKERD_SWEEP_INTERVAL, default 5m).")
    var sweepInterval: String?
    @Option(help: "Retry policy of every kind without its own (env WORKERD_DEFAULT_RETRY).")
    var defaultRetry: String?
    @Option(help: "KIND:DURATION, how long processed events of a kind stay deduplicated; repeatable (env WORKERD_IDEMPOTENCY_TTL, default 24h).")
    var idempotencyTTL: [String] = []
    @Option(help: "KIND:POLICY, the retry policy of one kind; repeatable (env WORKERD_RETRY).")
    var retry: [String] = []
    @Option(help: "trace, debug, info, notice, warning, error or critical (env WORKERD_LOG_LEVEL, default info).")
    var logLevel: String?
    @Option(help: "text, json or logfmt; json and logfmt write one event per line for journald (env WORKERD_LOG_FORMAT, default text).")
    var logFormat: String?
    @Option(help: "HOST:PORT of the Prometheus endpoint /metrics, or 'off' (env WORKERD_METRICS_ADDRESS, default 127.0.0.1:9464).")
    var metricsAddress: String?
    @Flag(help: "Apply pending migrations before starting (for demos; fleets run `workerctl migrate`).")
    var migrate = false
    @Flag(help: "Print the settings in force, check that the database is reachable with a current schema, and exit: 0 when workerd would start, 78 for a bad setting, 1 for a database that is not ready.")
    var check = false
    @Option(help: "Directory of the numbered migrations, for --migrate (env WORKER_SQL_DIR).")
    var sqlDir: String?

    public init() {}

    public func validate() throws {
        if check && migrate { throw ValidationError("--check changes nothing: leave out --migrate") }
    }

    /// Everything workerd needs, resolved and validated before anything starts.
    struct Settings {
        var database: DatabaseConfig
        var worker: WorkerConfiguration
        var handlers: HandlerRegistry
        var logLevel: String
        var logFormat: String
        var metrics: (host: String, port: Int)?
    }

    func settings(environment: [String: String]) throws -> Settings {
        let read = SettingReader(environment: environment)
        var worker = WorkerConfiguration()
        worker.queues = read.list(queues, "queues", env: "WORKERD_QUEUES", default: "default")
        worker.concurrency = try read.int(concurrency, "concurrency", env: "WORKERD_CONCURRENCY", default: 10, range: 1...1000)
        for entry in read.list(queueConcurrency, "queue-concurrency", env: "WORKERD_QUEUE_CONCURRENCY", default: "") {
            // At the last '=': a queue's name is free text.
            guard let equals = entry.lastIndex(of: "="), let lanes = Int(entry[entry.index(after: equals)...]),
                  !entry[..<equals].isEmpty
            else {
                throw ConfigurationError(setting: "--queue-concurrency / WORKERD_QUEUE_CONCURRENCY", "'\(entry)' is not QUEUE=LANES")
            }
            worker.queueConcurrency[String(entry[..<equals])] = lanes
        }
        worker.batchSize = try read.int(batchSize, "batch-size", env: "WORKERD_BATCH_SIZE", default: 10, range: 1...1000)
        worker.visibilityTimeout = try read.duration(
            visibilityTimeout, "visibility-timeout", env: "WORKERD_VISIBILITY_TIMEOUT", default: "30s")
        worker.pollInterval = try read.duration(pollInterval, "poll-interval", env: "WORKERD_POLL_INTERVAL", default: "1s")
        worker.stopTimeout = try read.duration(stopTimeout, "stop-timeout", env: "WORKERD_STOP_TIMEOUT", default: "25s")
        if let silence = try read.duration(silenceTimeout, "silence-timeout", env: "WORKERD_SILENCE_TIMEOUT") {
            worker.silenceTimeout = silence
        }
        worker.workerID = read.string(workerID, "worker-id", env: "WORKERD_WORKER_ID", default: worker.workerID)
        let sweep = read.string(sweepInterval, "sweep-interval", env: "WORKERD_SWEEP_INTERVAL", default: "5m")
        worker.sweepInterval = sweep == "off"
            ? nil : try read.duration(sweep, "sweep-interval", env: "WORKERD_SWEEP_INTERVAL", default: "5m")
        try worker.validate()

        let defaultPolicy = try RetryPolicy.default.overridden(
            by: read.string(defaultRetry, "default-retry", env: "WORKERD_DEFAULT_RETRY", default: ""),
            setting: "--default-retry / WORKERD_DEFAULT_RETRY")
        var handlers = HandlerRegistry.standard(defaultPolicy: defaultPolicy)
        // A kind no handler serves is a typo: its jobs would never see the setting.
        func known(_ kind: String, _ setting: String) throws {
            guard handlers.handler(for: kind) == nil else { return }
            throw ConfigurationError(
                setting: setting, "no handler for kind '\(kind)' (kinds: \(handlers.kinds.joined(separator: ", ")))")
        }
        for (kind, policy) in try Self.perKind(retry, env: "WORKERD_RETRY", flag: "retry", environment: environment) {
            let setting = "--retry / WORKERD_RETRY"
            try known(kind, setting)
            handlers.setPolicy(try defaultPolicy.overridden(by: policy, setting: setting), for: kind)
        }
        for (kind, ttl) in try Self.perKind(
            idempotencyTTL, env: "WORKERD_IDEMPOTENCY_TTL", flag: "idempotency-ttl", environment: environment)
        {
            let setting = "--idempotency-ttl / WORKERD_IDEMPOTENCY_TTL"
            try known(kind, setting)
            let duration = try DurationParser.parse(ttl, setting: setting)
            guard duration >= .seconds(1) else { throw ConfigurationError(setting: setting, "\(kind): must be at least 1s") }
            handlers.setIdempotencyTTL(duration, for: kind)
        }
        var database = try DatabaseConfig.resolve(url: databaseURL, environment: environment)
        if database.applicationName == nil { database.applicationName = "workerd \(worker.workerID)" }
        let metrics = try Self.listenAddress(
            read.string(metricsAddress, "metrics-address", env: "WORKERD_METRICS_ADDRESS", default: "127.0.0.1:9464"),
            setting: "--metrics-address / WORKERD_METRICS_ADDRESS")
        if metrics != nil { worker.metricsInterval = .seconds(5) }
        return Settings(
            database: database,
            worker: worker, handlers: handlers,
            logLevel: read.string(logLevel, "log-level", env: "WORKERD_LOG_LEVEL", default: "info"),
            logFormat: read.string(logFormat, "log-format", env: "WORKERD_LOG_FORMAT", default: "text"),
            metrics: metrics)
    }

    /// `HOST:PORT`, `[IPv6]:PORT` or `off`, HOST an IP address or `localhost`:
    /// a name would be looked up in DNS at every start (blocking, and a
    /// typo would only show as a failed bind).
    static func listenAddress(_ text: String, setting: String) throws -> (host: String, port: Int)? {
        if text == "off" { return nil }
        guard let colon = text.lastIndex(of: ":") else {
            throw ConfigurationError(setting: setting, "'\(text)' is not HOST:PORT or off")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ConfigurationError(setting: setting, "'\(text)' is not HOST:PORT (port 0 to 65535) or off")
        }
        if host.lowercased() == "localhost" { host = "127.0.0.1" }
        guard (try? SocketAddress(ipAddress: host, port: port)) != nil else {
            throw ConfigurationError(
                setting: setting, "'\(host)' is not an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1]) or localhost")
        }
        return (host, port)
    }

    /// `KIND:VALUE` entries from a repeatable flag, else from `env` separated by `;`.
    static func perKind(
        _ flags: [String], env: String, flag: String, environment: [String: String]
    ) throws -> [(kind: String, value: String)] {
        let entries = flags.isEmpty ? (environment[env] ?? "").split(separator: ";").map(String.init) : flags
        return try entries.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map { entry in
            let setting = "--\(flag) / \(env)"
            guard let colon = entry.firstIndex(of: ":") else {
                throw ConfigurationError(setting: setting, "'\(entry)' is not KIND:VALUE")
            }
            let kind = entry[..<colon].trimmingCharacters(in: .whitespaces)
            guard !kind.isEmpty else { throw ConfigurationError(setting: setting, "'\(entry)' names no kind") }
            return (kind, String(entry[entry.index(after: colon)...]))
        }
    }

    public func run() async throws {
        let settings: Settings
        let clientConfiguration: PostgresClient.Configuration
        let sqlDirectory: URL?
        do {
            settings = try self.settings(environment: ProcessInfo.processInfo.environment)
            try LogSetup.bootstrap(
                level: settings.logLevel, format: settings.logFormat, setting: "--log-level / WORKERD_LOG_LEVEL",
                formatSetting: "--log-format / WORKERD_LOG_FORMAT")
            clientConfiguration = try settings.database.workerClientConfiguration(
                connections: settings.worker.connectionsNeeded)  // reads sslrootcert
            sqlDirectory = migrate
                ? try Migration.locateDirectory(explicit: sqlDir, environment: ProcessInfo.processInfo.environment)
                : nil
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("workerd: \(error)\n".utf8))
            throw ExitCode(78)  // EX_CONFIG: systemd's RestartPreventExitStatus= keeps it from looping
        }
        if check { return try await settings.check() }
        let logger = Logger(label: "workerd")

        let client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
        let worker = Worker(
            client: client, configuration: settings.worker, handlers: settings.handlers, logger: logger)
        let startup = WorkerStartup(
            client: client, worker: worker, sqlDirectory: sqlDirectory, database: settings.database,
            notifier: SystemdNotifier(environment: ProcessInfo.processInfo.environment), logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: client), .init(service: startup)]
        if let (host, port) = settings.metrics {
            services.append(.init(service: try await Self.startMetrics(host: host, port: port, logger: logger)))
        }
        var group = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        group.maximumGracefulShutdownDuration = settings.worker.stopTimeout
        group.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: group).run()
    }
}

extension WorkerdCommand {
    /// Sends swift-metrics to a Prometheus registry and serves it; a port
    /// that cannot be bound stops startup with the setting's name.
    static func startMetrics(host: String, port: Int, logger: Logger) async throws -> MetricsServer {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Handlers take from microseconds (a no-op) to seconds (a slow gateway).
        factory.durationHistogramBuckets[JobMetrics.handlerDuration] = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30),
        ]
        MetricsSystem.bootstrap(factory)
        // A series an alert watches exists from the start, at 0: one that
        // appears only with its first count leaves `rate()` with no data.
        for name in [JobMetrics.batchErrors, JobMetrics.heartbeatFailures] { _ = Counter(label: name) }
        do {
            return try await MetricsServer(host: host, port: port, registry: registry, logger: logger)
        } catch {
            FileHandle.standardError.write(Data(
                "workerd: --metrics-address / WORKERD_METRICS_ADDRESS: cannot listen on \(MetricsServer.address(host: host, port: port)): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Waits for the database, checks (or applies) the schema, then runs the worker.
struct WorkerStartup: Service {
    let client: PostgresClient
    let worker: Worker
    let sqlDirectory: URL?
    let database: DatabaseConfig
    let notifier: SystemdNotifier
    let logger: Logger

    /// Each retry extends systemd's start timeout by this much (in µs).
    static let startupExtension = 30_000_000

    func run() async throws {
        let migrator = Migrator(client: client, logger: logger)
        var delay = Duration.milliseconds(200)
        while true {
            do {
                try await database.probe(logger: logger)
                if let sqlDirectory {
                    try await migrator.migrate(try Migration.load(from: sqlDirectory))
                }
                try await migrator.checkSchema()
                break
            } catch let error as PostgresWorkerError {
                throw error
            } catch let error as MigrationError {
                throw error
            } catch {
                logger.warning("database not reachable, retrying", metadata: [
                    "database": "\(database.redactedURL)", "error": "\(String(reflecting: error))",
                ])
                // Waiting for the database is not a failed start: keep systemd's start
                // timeout from killing the process, and show why in `systemctl status`.
                notifier.send("STATUS=waiting for the database: \(error)\nEXTEND_TIMEOUT_USEC=\(Self.startupExtension)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
                if Task.isShuttingDownGracefully { return }
            }
        }
        logger.info("connected, schema checked", metadata: ["database": "\(database.redactedURL)"])
        if let warning = try? await AutovacuumCheck.read(from: client, logger: logger).warning {
            logger.warning("\(warning)", metadata: ["see": "README, Running PostgreSQL for a queue"])
        }
        await notifier.sendWaitingOutAFullQueue("READY=1\nSTATUS=working queues \(worker.configuration.queues.joined(separator: ","))")
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                if notifier.isEnabled {
                    let watchdog = SystemdWatchdog(notifier: notifier, worker: worker, logger: logger)
                    group.addTask { await watchdog.run() }
                }
                try await worker.run()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            notifier.send("STOPPING=1\nSTATUS=draining in-flight jobs")
        }
    }
}
