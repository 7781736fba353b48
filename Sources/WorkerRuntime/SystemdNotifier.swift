#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The sd_notify(3) protocol without libsystemd: one datagram per message to
/// the socket systemd names in `NOTIFY_SOCKET` (a path, or `@name` for an
/// abstract socket). Without `NOTIFY_SOCKET` every send does nothing, so
/// workerd runs the same under systemd, in a shell or in tests.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    /// How often systemd expects `WATCHDOG=1`, when it watches this process.
    public let watchdogTimeout: Duration?

    public init(environment: [String: String]) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        let forUs = environment["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        watchdogTimeout = environment["WATCHDOG_USEC"].flatMap(Int64.init).flatMap {
            forUs && $0 > 0 ? .microseconds($0) : nil
        }
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends `KEY=value` lines; failures are ignored, as sd_notify's are: the
    /// service must not stop working because its supervisor stopped listening.
    /// Nor wait for it: a full socket queue fails the send (MSG_DONTWAIT) rather
    /// than block the calling thread, a thread of Swift's cooperative pool.
    @discardableResult
    public func send(_ message: String) -> Bool {
        deliver(message) == 0
    }

    /// `send` for a message systemd must not miss (READY=1: without it, a
    /// `Type=notify` start times out and the unit is killed): a full socket
    /// queue is waited out, up to `patience`, by sleeping, not by blocking.
    @discardableResult
    public func sendWaitingOutAFullQueue(_ message: String, patience: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + patience
        while true {
            let error = deliver(message)
            guard error == EAGAIN, ContinuousClock.now < deadline else { return error == 0 }
            do { try await Task.sleep(for: .milliseconds(20)) } catch { return false }  // cancelled
        }
    }

    /// Sends one datagram; 0, or the errno of the failure (-1: no socket to send to).
    private func deliver(_ message: String) -> Int32 {
        guard let socketPath else { return -1 }
        var path = Array(socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        var address = sockaddr_un()
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { return -1 }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)

        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let bytes = Array(message.utf8)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                let sent = sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), socketAddress, length)
                return sent < 0 ? errno : sent == bytes.count ? 0 : EMSGSIZE  // errno before anything else runs
            }
        }
    }
}
