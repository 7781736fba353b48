import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on loopback in front of a PostgreSQL port whose link can go
/// silent: while it is, bytes of open connections are dropped in both
/// directions and nothing is closed, as when a cable is pulled or a firewall
/// starts dropping packets; neither end learns of it except by waiting. New
/// connections meanwhile are closed at once (a real cut would leave their
/// SYN unanswered until the connect timeout). A closed side is closed on the
/// other too, except for a broken flow (see `breakOpenFlows`).
public final class SilentLinkProxy: Sendable {
    public let port: Int
    private let link = LinkState()
    private let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let serving: Task<Void, Never>

    public init(upstreamPort: Int) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        self.server = server
        self.port = server.channel.localAddress?.port ?? 0
        let link = self.link
        self.serving = Task {
            try? await server.executeThenClose { clients in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await client in clients {
                            if link.isSilent {
                                try? await client.channel.close()
                                continue
                            }
                            let born = link.generation
                            group.addTask { await Self.relay(client, to: upstreamPort, over: link, born: born) }
                        }
                    } catch {}
                }
            }
        }
    }

    /// Drops every byte from now on, in both directions, closing nothing.
    public func goSilent() { link.silent.store(true, ordering: .sequentiallyConsistent) }
    /// Passes bytes again; streams that lost bytes meanwhile are broken, as they would be.
    public func restore() { link.silent.store(false, ordering: .sequentiallyConsistent) }
    /// A healed partition: the connections open now are dead (their bytes are
    /// dropped, and when the server closes one the client is not told, as when
    /// the server dropped a session while the link was down), new ones work.
    public func breakOpenFlows() { link.generations.add(1, ordering: .sequentiallyConsistent) }

    public func close() async {
        try? await server.channel.close()
        serving.cancel()
        await serving.value
    }

    private static func relay(
        _ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>, to upstreamPort: Int, over link: LinkState, born: Int
    ) async {
        let broken: @Sendable () -> Bool = { link.generation != born }
        do {
            let upstream = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: upstreamPort) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            try await client.executeThenClose { clientIn, clientOut in
                try await upstream.executeThenClose { upstreamIn, upstreamOut in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await bytes in clientIn where !link.isSilent && !broken() {
                                try await upstreamOut.write(bytes)
                            }
                        }
                        group.addTask {
                            for try await bytes in upstreamIn where !link.isSilent && !broken() {
                                try await clientOut.write(bytes)
                            }
                            // The server closed a broken flow: the client must not learn it.
                            while broken() { try await Task.sleep(for: .milliseconds(50)) }
                        }
                        // Either side closing ends the relay, which closes the other.
                        try await group.next()
                        group.cancelAll()
                    }
                }
            }
        } catch {}
    }
}

private final class LinkState: Sendable {
    let silent = Atomic<Bool>(false)
    var isSilent: Bool { silent.load(ordering: .sequentiallyConsistent) }
    let generations = Atomic<Int>(0)
    var generation: Int { generations.load(ordering: .sequentiallyConsistent) }
}
