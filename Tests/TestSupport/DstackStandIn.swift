import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A stand-in for the dstack guest agent: HTTP/1.1 on a real Unix socket,
/// answering `POST /GetKey {"path", "purpose"}` with
/// `{"key": "<hex>", "signature_chain": ["<hex>", …]}` as dstack does. The
/// key is HMAC-SHA256(root, path), so tests can predict it.
public final class DstackStandIn: @unchecked Sendable {
    /// The socket path.
    public let socketPath: String
    /// The root the keys are derived from.
    public let root: [UInt8]
    private let channel: any Channel

    /// What the stand-in answers.
    public enum Behaviour: Sendable {
        /// Keys as dstack gives them.
        case normal
        /// HTTP 500 to everything.
        case failing
        /// 200 with a body that is not the GetKey JSON.
        case garbage
    }

    /// Starts listening on a fresh socket in a temporary directory.
    public init(root: [UInt8] = Array(repeating: 7, count: 32), behaviour: Behaviour = .normal) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        socketPath = directory.appendingPathComponent("dstack.sock").path
        self.root = root
        let root = root
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(root: root, behaviour: behaviour))
                }
            }
            .bind(unixDomainSocketPath: socketPath)
            .wait()
    }

    /// The key the stand-in derives for `path` (all 32 bytes).
    public static func expectedKey(root: [UInt8], path: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(path.utf8), using: SymmetricKey(data: root)))
    }

    /// Stops listening and removes the socket.
    public func stop() {
        try? channel.close().wait()
        try? FileManager.default.removeItem(atPath: socketPath)
    }

    deinit { stop() }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let root: [UInt8]
        let behaviour: Behaviour
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(root: [UInt8], behaviour: Behaviour) {
            self.root = root
            self.behaviour = behaviour
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let requestHead):
                head = requestHead
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                let (status, reply) = answer()
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: "\(reply.utf8.count)")
                let version = head?.version ?? .http1_1
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                    promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func answer() -> (HTTPResponseStatus, String) {
            switch behaviour {
            case .failing: return (.internalServerError, "{\"error\":\"agent failure\"}")
            case .garbage: return (.ok, "not json")
            case .normal: break
            }
            guard let head, head.method == .POST else { return (.methodNotAllowed, "{\"error\":\"POST only\"}") }
            // The official SDK may prefix the path (e.g. /prpc/...); accept any path ending in GetKey.
            let route = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            guard route.hasSuffix("/GetKey") else { return (.notFound, "{\"error\":\"unknown method\"}") }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                let path = object["path"] as? String
            else { return (.badRequest, "{\"error\":\"expected {path, purpose}\"}") }
            let key = DstackStandIn.expectedKey(root: root, path: path)
            let chain = [
                Array(SHA256.hash(data: key + Array("sig1".utf8))),
                Array(SHA256.hash(data: key + Array("sig2".utf8))),
            ]
            func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
            return (.ok, "{\"key\":\"\(hex(key))\",\"signature_chain\":[\"\(hex(chain[0]))\",\"\(hex(chain[1]))\"]}")
        }
    }
}
