import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 keep-alive connection, over TCP or a Unix socket, that runs
/// one request at a time. Small on purpose: the KMS client, the dstack
/// provider and the load generator need nothing more, and each load-test
/// client owns its connection.
public final class HTTPConnection: Sendable {
    /// Where to connect.
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    /// A response: status, headers and the whole body.
    public struct Response: Sendable {
        public let status: Int
        public let headers: HTTPHeaders
        public let body: [UInt8]
    }

    /// Why a request got no response.
    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    let channel: any Channel
    let hostHeader: String
    let timeout: TimeAmount

    private init(channel: any Channel, hostHeader: String, timeout: TimeAmount) {
        self.channel = channel
        self.hostHeader = hostHeader
        self.timeout = timeout
    }

    /// Opens a connection.
    public static func connect(
        to endpoint: Endpoint,
        timeout: TimeAmount = .seconds(10),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(Failure) -> HTTPConnection {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseHandler())
                }
            }
        do {
            switch endpoint {
            case .tcp(let host, let port):
                let channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: host, port: port).get()
                return HTTPConnection(channel: channel, hostHeader: "\(host):\(port)", timeout: timeout)
            case .unix(let path):
                let channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
                return HTTPConnection(channel: channel, hostHeader: "localhost", timeout: timeout)
            }
        } catch {
            throw Failure(reason: "cannot connect to \(endpoint): \(error)")
        }
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Sends a request and waits for the whole response.
    public func request(
        _ method: HTTPMethod,
        _ path: String,
        body: [UInt8] = [],
        contentType: String = "application/json"
    ) async throws(Failure) -> Response {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: hostHeader)
        if method == .POST || !body.isEmpty {
            head.headers.add(name: "Content-Type", value: contentType)
            head.headers.add(name: "Content-Length", value: "\(body.count)")
        }
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let outbound = ResponseHandler.Outbound(head: head, body: body, reply: promise)
        // One trip to the event loop for the deadline, the write and the
        // flush (none when already on it), rather than one for each.
        channel.eventLoop.execute { [channel, timeout] in
            let deadline = channel.eventLoop.scheduleTask(in: timeout) {
                promise.fail(Failure(reason: "no response within \(timeout)"))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in deadline.cancel() }
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenFailure { error in promise.fail(Failure(reason: "write failed: \(error)")) }
            channel.writeAndFlush(outbound, promise: written)
        }
        do {
            return try await promise.futureResult.get()
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(reason: "\(error)")
        }
    }

    /// Closes the connection.
    public func close() {
        channel.close(promise: nil)
    }

    /// Writes requests and matches each response to its promise.
    final class ResponseHandler: ChannelDuplexHandler {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundIn = Outbound
        typealias OutboundOut = HTTPClientRequestPart

        struct Outbound {
            let head: HTTPRequestHead
            let body: [UInt8]
            let reply: EventLoopPromise<Response>
        }

        static let maximumBody = 4 << 20
        private var waiting: EventLoopPromise<Response>?
        private var status = 0
        private var headers = HTTPHeaders()
        private var body: [UInt8] = []

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            let outbound = unwrapOutboundIn(data)
            guard waiting == nil else {
                outbound.reply.fail(Failure(reason: "a request is already in flight on this connection"))
                promise?.fail(Failure(reason: "busy"))
                return
            }
            waiting = outbound.reply
            context.write(wrapOutboundOut(.head(outbound.head)), promise: nil)
            if !outbound.body.isEmpty {
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: outbound.body)))), promise: nil)
            }
            context.write(wrapOutboundOut(.end(nil)), promise: promise)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                status = Int(head.status.code)
                headers = head.headers
                body = []
            case .body(var buffer):
                guard body.count + buffer.readableBytes <= Self.maximumBody else {
                    fail(Failure(reason: "response larger than \(Self.maximumBody) bytes"), context: context)
                    return
                }
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                let reply = waiting
                waiting = nil
                reply?.succeed(Response(status: status, headers: headers, body: body))
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            fail(Failure(reason: "connection error: \(error)"), context: context)
        }

        func channelInactive(context: ChannelHandlerContext) {
            waiting?.fail(Failure(reason: "the server closed the connection before answering"))
            waiting = nil
            context.fireChannelInactive()
        }

        private func fail(_ failure: Failure, context: ChannelHandlerContext) {
            waiting?.fail(failure)
            waiting = nil
            context.close(promise: nil)
        }
    }
}
