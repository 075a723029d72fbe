import NIOCore
import NIOHTTP1
import NIOPosix

/// The node's metrics endpoint (`metricsListen`): plain HTTP/1.1, `GET
/// /metrics` answered with the Prometheus text format, anything else with
/// 404 or 405. Metrics hold no secret; the endpoint is bounded all the same
/// (at most ``maximumConnections`` at once, ``maximumConnectionsPerAddress``
/// from one address, a request within ``requestDeadline``, one request per
/// connection).
struct MetricsListener: Sendable {
    static let requestDeadline: TimeAmount = .seconds(5)
    static let maximumConnections = 16
    static let maximumConnectionsPerAddress = 4

    let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    let render: @Sendable () async -> String

    /// The port it is bound to.
    var port: Int { server.channel.localAddress?.port ?? 0 }

    static func listen(on address: PeerAddress, render: @escaping @Sendable () async -> String) async throws
        -> MetricsListener
    {
        let limiter = HandshakeLimiter(total: maximumConnections, perAddress: maximumConnectionsPerAddress)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) {
                channel -> EventLoopFuture<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>> in
                let remote = channel.remoteAddress?.ipAddress ?? "?"
                guard limiter.acquire(remote) else {
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
                }
                channel.closeFuture.whenComplete { _ in limiter.release(remote) }
                channel.eventLoop.scheduleTask(in: requestDeadline) { channel.close(promise: nil) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        return MetricsListener(server: server, render: render)
    }

    /// Answers scrapes until the listener closes.
    func run() async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask { try? await serve(connection) }
                }
            }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async throws {
        try await connection.executeThenClose { requests, responses in
            var head: HTTPRequestHead?
            for try await part in requests {
                switch part {
                case .head(let received): head = received
                case .body: continue
                case .end:
                    guard let request = head else { return }
                    let (status, body): (HTTPResponseStatus, String)
                    if request.uri.split(separator: "?").first != "/metrics" {
                        (status, body) = (.notFound, "not found: the metrics are at /metrics\n")
                    } else if request.method != .GET {
                        (status, body) = (.methodNotAllowed, "only GET\n")
                    } else {
                        (status, body) = (.ok, await render())
                    }
                    var headers = HTTPHeaders()
                    headers.add(
                        name: "Content-Type",
                        value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
                    headers.add(name: "Content-Length", value: "\(body.utf8.count)")
                    headers.add(name: "Connection", value: "close")
                    try await responses.write(
                        .head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
                    try await responses.write(.body(.byteBuffer(ByteBuffer(string: body))))
                    try await responses.write(.end(nil))
                    return
                }
            }
        }
    }

    func close() async {
        try? await server.channel.close()
    }
}
