import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// Serves `GET /metrics` in the Prometheus text format. Bound to loopback by
/// default: the metrics name queues and kinds, which is not for the network
/// at large; a scraper on another host goes through a proxy or an explicit
/// address.
public final class MetricsServer: Service, Sendable {
    private let channel: any Channel
    public let logger: Logger

    /// Where it listens; with port 0 the port the system chose.
    public var address: String {
        guard let local = channel.localAddress else { return "?" }
        return Self.address(host: local.ipAddress ?? "?", port: local.port ?? 0)
    }

    /// `HOST:PORT`, an IPv6 host bracketed, as in a URL and in --metrics-address.
    public static func address(host: String, port: Int) -> String {
        "\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Binds at once, so that a taken port stops startup with its reason.
    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger) async throws {
        self.logger = logger
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(MetricsHandler(registry: registry))
                }
            }
            .bind(host: host, port: port).get()
    }

    public func run() async throws {
        logger.info("metrics endpoint listening", metadata: ["address": "http://\(address)/metrics"])
        try await gracefulShutdown()
        try await channel.close()
    }
}

/// One response per request: the registry's current text, or 404.
private final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {
    // Used only on its channel's event loop.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request else { return }
            request = nil
            let found = head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?"))
            let body = found ? registry.emitToBuffer() : Array("not found: try /metrics\n".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.count)")
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(
                version: head.version, status: found ? .ok : .notFound, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let (keepAlive, channel) = (head.isKeepAlive, context.channel)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}
