import Foundation
import PostgresNIO
import Testing
import WorkerEngine
import WorkerRuntime
import WorkerTestSupport

/// workerd speaks sd_notify to a datagram socket of the test's own, as it
/// would to systemd with `Type=notify` and `WatchdogSec=`.
@Suite(.timeLimit(.minutes(2))) struct SystemdNotifyTests {
    @Test func readyWatchdogStatusAndStoppingAndTheWatchdogFallsSilentWhileClaimsAreStuck() async throws {
        try await withTestDatabase { db in
            let socket = try NotifySocket()
            let workerd = try ToolProcess("workerd", ["--worker-id", "notify", "--concurrency", "2", "--poll-interval", "100ms"], environment: [
                "DATABASE_URL": db.url, "NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "1000000",
            ])
            try await eventually("READY=1") { socket.receive().contains { $0.hasPrefix("READY=1") } }
            try await eventually("two watchdog pings") { socket.receive().filter { $0 == "WATCHDOG=1" }.count >= 2 }
            #expect(socket.received.contains { $0.hasPrefix("STATUS=") && $0.contains("jobs/s") })

            // An exclusive lock on the queue blocks every claim: the watchdog must fall silent.
            try await db.client.withConnection { connection in
                try await connection.query("BEGIN", logger: db.logger)
                try await connection.query("LOCK TABLE worker.jobs IN ACCESS EXCLUSIVE MODE", logger: db.logger)
                // Said, and meant: no ping after the line (a stall of workerd
                // alone would also leave a gap between pings).
                try await eventually("the watchdog to be withheld") {
                    workerd.stderrSoFar.contains("claim loop stuck; withholding the systemd watchdog")
                }
                _ = socket.receive()
                let silentSince = socket.lastWatchdog
                try await eventually("a ping's interval and more without one") {
                    _ = socket.receive()
                    return ContinuousClock.now - silentSince > .milliseconds(1800)
                }
                #expect(socket.lastWatchdog == silentSince, "a ping while a claim was stuck")
                try await connection.query("COMMIT", logger: db.logger)
            }
            let silentSince = socket.lastWatchdog
            try await eventually("the pings to resume") { _ = socket.receive(); return socket.lastWatchdog > silentSince }

            workerd.send(SIGTERM)
            let result = await workerd.result()
            #expect(result.status == 0, "\(result)")
            #expect(socket.receive().contains { $0.hasPrefix("STOPPING=1") })
            #expect(result.stderr.contains("claim loop stuck; withholding the systemd watchdog"))
        }
    }
}

@Suite struct SystemdNotifierTests {
    @Test func withoutNotifySocketNothingIsSentAndTheWatchdogIsForAnotherProcessWhenItsPIDDiffers() {
        let outside = SystemdNotifier(environment: [:])
        #expect(!outside.isEnabled)
        #expect(!outside.send("READY=1"))

        let ours = SystemdNotifier(environment: [
            "NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": String(getpid()),
        ])
        #expect(ours.watchdogTimeout == .seconds(3))
        let theirs = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"])
        #expect(theirs.watchdogTimeout == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"]).watchdogTimeout == nil)
    }

    /// A supervisor that stops reading must not stall the caller's thread
    /// (a thread of the cooperative pool): once the socket's queue is full,
    /// a send fails at once, as sd_notify's failures are ignored.
    @Test(.timeLimit(.minutes(1))) func aSendToAFullSocketFailsAtOnceAndReadyWaitsForRoom() async throws {
        let socket = try NotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.path])
        var sent = 0
        while sent < 100_000, notifier.send("STATUS=\(sent)") { sent += 1 }
        #expect(sent > 0 && sent < 100_000)

        // READY=1 waits for room instead: it arrives once the reader drains the queue.
        let ready = Task { await notifier.sendWaitingOutAFullQueue("READY=1", patience: .seconds(30)) }
        #expect(socket.receive().first == "STATUS=0")
        #expect(await ready.value)
        #expect(socket.receive().last == "READY=1")
    }
}

@Suite(.timeLimit(.minutes(1))) struct SystemdStartupTests {
    @Test func whileTheDatabaseIsUnreachableTheStartTimeoutIsExtendedAndTheStatusSaysWhy() async throws {
        let socket = try NotifySocket()
        let workerd = try ToolProcess("workerd", ["--worker-id", "waiting"], environment: [
            "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable", "NOTIFY_SOCKET": socket.path,
        ])
        try await eventually("two extensions") { socket.receive().filter { $0.hasPrefix("EXTEND_TIMEOUT_USEC=") }.count >= 2 }
        #expect(socket.received.contains { $0.hasPrefix("STATUS=waiting for the database: cannot connect to postgres://postgres@127.0.0.1:1") })
        #expect(!socket.received.contains("READY=1"))
        workerd.send(SIGTERM)
        let result = await workerd.result()
        #expect(result.status == 0, "\(result)")
    }
}

/// A datagram socket standing in for systemd's notify socket.
final class NotifySocket: @unchecked Sendable {
    // Touched only from the test's own task.
    let path: String
    private let fd: Int32
    private(set) var received: [String] = []
    private(set) var lastWatchdog = ContinuousClock.now

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw DatabaseTestError(detail: "cannot bind \(path): errno \(errno)") }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Everything received so far, after reading what is waiting without blocking.
    func receive() -> [String] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard count > 0 else { break }
            for line in String(decoding: buffer[..<count], as: UTF8.self).split(separator: "\n") {
                received.append(String(line))
                if line == "WATCHDOG=1" { lastWatchdog = .now }
            }
        }
        return received
    }
}
