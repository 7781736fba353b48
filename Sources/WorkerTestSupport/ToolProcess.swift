import Foundation
import Synchronization

/// One of the package's executables (`workerd`, `workerctl`) running as an
/// operator would start it, so tests see exit codes and output for real.
///
/// Output goes to files rather than pipes: a chatty child can never block on a
/// full pipe while the test waits for it to exit.
public final class ToolProcess: Sendable {
    public let pid: Int32
    private let exit = ExitStatus()
    private let outputDirectory: URL

    /// Starts the package's executable `tool` with `arguments`.
    public convenience init(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        try self.init(executable: Self.executable(tool), arguments, environment: environment)
    }

    /// Where the package's executable `tool` was built.
    public static func executable(_ tool: String) throws -> URL {
        let executable = try binaryDirectory().appendingPathComponent(tool)
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw DatabaseTestError(detail: "\(executable.path) is missing: run `swift build --build-tests` first")
        }
        return executable
    }

    /// Starts `executable` with `arguments`. The child inherits no database or
    /// worker settings from the test's environment, only those in `environment`.
    public init(executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        outputDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let stdout = outputDirectory.appendingPathComponent("stdout")
        let stderr = outputDirectory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: stdout.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)

        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var inherited = ProcessInfo.processInfo.environment.filter { key, _ in
            !(key == "DATABASE_URL" || key.hasPrefix("PG") || key.hasPrefix("WORKERD_") || key.hasPrefix("WORKER_"))
        }
        // Many workerd run at once in tests: each takes a free port for its metrics.
        inherited["WORKERD_METRICS_ADDRESS"] = "127.0.0.1:0"
        inherited.merge(environment) { $1 }
        process.environment = inherited
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        let exit = self.exit
        process.terminationHandler = { exit.record($0.terminationStatus) }
        try process.run()
        pid = process.processIdentifier
    }

    /// A test that fails before it stops its child must not leave it running
    /// (a workerd of a failed test kept reconnecting to a dropped database for
    /// an hour).
    deinit {
        if !exit.hasExited { kill(pid, SIGKILL) }
    }

    /// Sends `signal` (SIGTERM, SIGKILL, ...) to the child.
    public func send(_ signal: Int32) { kill(pid, signal) }

    /// What the child has printed so far, while it runs.
    public var stdoutSoFar: String { read("stdout") }
    public var stderrSoFar: String { read("stderr") }

    /// Waits for the child to exit and returns what it printed.
    public func result() async -> ToolResult {
        let status = await exit.wait()
        defer { try? FileManager.default.removeItem(at: outputDirectory) }
        return ToolResult(status: status, stdout: read("stdout"), stderr: read("stderr"))
    }

    private func read(_ name: String) -> String {
        (try? String(contentsOf: outputDirectory.appendingPathComponent(name), encoding: .utf8)) ?? ""
    }

    /// Where `swift build` put the executables: beside the test bundle, unless
    /// `WORKER_BIN_DIR` says otherwise.
    static func binaryDirectory() throws -> URL {
        if let directory = ProcessInfo.processInfo.environment["WORKER_BIN_DIR"] {
            return URL(fileURLWithPath: directory)
        }
        guard let bundle = Bundle.main.executableURL else {
            throw DatabaseTestError(detail: "cannot tell where the test binary is; set WORKER_BIN_DIR")
        }
        return bundle.deletingLastPathComponent()
    }
}

/// The child's exit status, set once by Foundation's termination handler.
private final class ExitStatus: Sendable {
    private let status = Mutex<Int32?>(nil)
    private let exited = Gate()

    func record(_ value: Int32) {
        status.withLock { $0 = value }
        exited.open()
    }

    func wait() async -> Int32 {
        await exited.wait()
        return status.withLock { $0 } ?? -1
    }

    var hasExited: Bool { status.withLock { $0 != nil } }
}

/// How a tool exited and what it printed.
public struct ToolResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public var description: String { "exit \(status)\nstdout:\n\(stdout)\nstderr:\n\(stderr)" }
}

/// The repository's top directory, where `sql/`, `scripts/` and `deploy/` are.
public var repositoryRoot: URL { repositorySQLDirectory.deletingLastPathComponent() }

/// The repository's `scripts/` directory.
public var repositoryScripts: URL { repositoryRoot.appendingPathComponent("scripts") }

/// Runs one of the repository's scripts to completion.
public func runScript(_ name: String, _ arguments: [String]) async throws -> ToolResult {
    try await ToolProcess(executable: repositoryScripts.appendingPathComponent(name), arguments).result()
}

/// Runs `tool` to completion against `database`.
public func runTool(
    _ tool: String, _ arguments: [String], database: TestDatabase? = nil, environment: [String: String] = [:]
) async throws -> ToolResult {
    var environment = environment
    if let database { environment["DATABASE_URL"] = database.url }
    return try await ToolProcess(tool, arguments, environment: environment).result()
}
