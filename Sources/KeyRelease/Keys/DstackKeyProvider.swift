import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SecretSharing

/// Keys from the dstack guest agent over its Unix socket:
/// `POST /GetKey {"path": namespace + "/" + peerId, "purpose": "storage"}`
/// answers `{"key": "<hex>", "signature_chain": [...]}`; the first 32 bytes
/// of the key are used.
public struct DstackKeyProvider: KeyProvider {
    public let name = "dstack"
    /// The agent's socket (`DSTACK_SOCKET_PATH`, default `/var/run/dstack.sock`).
    public let socketPath: String
    /// How long one request may take.
    public let timeout: TimeAmount

    /// A provider talking to the agent at `socketPath`.
    public init(socketPath: String = "/var/run/dstack.sock", timeout: TimeAmount = .seconds(5)) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    struct GetKeyRequest: Encodable {
        let path: String
        let purpose: String
    }

    struct GetKeyResponse: Decodable {
        let key: String
        let signatureChain: [String]?

        enum CodingKeys: String, CodingKey {
            case key
            case signatureChain = "signature_chain"
        }
    }

    public func deriveKey(namespace: String, peerId: String) async throws(KeyProviderError) -> SecretBytes {
        let body: Data
        do {
            body = try JSONEncoder().encode(GetKeyRequest(path: "\(namespace)/\(peerId)", purpose: "storage"))
        } catch {
            throw KeyProviderError("cannot encode the dstack request")
        }
        let (status, reply) = try await UnixSocketHTTP.post(
            socketPath: socketPath,
            path: "/GetKey",
            body: Array(body),
            timeout: timeout
        )
        guard status == 200 else { throw KeyProviderError("dstack answered HTTP \(status)") }
        guard let decoded = try? JSONDecoder().decode(GetKeyResponse.self, from: Data(reply)) else {
            throw KeyProviderError("dstack's answer is not the GetKey JSON")
        }
        guard let key = SecretBytes(hex: decoded.key), key.count >= 32 else {
            throw KeyProviderError("dstack's key is not at least 32 bytes of hex")
        }
        return key.withUnsafeBytes { SecretBytes($0.prefix(32)) }
    }

    public func checkReady() throws(KeyProviderError) {
        var status = stat()
        guard stat(socketPath, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else {
            throw KeyProviderError("no dstack socket at \(socketPath)")
        }
    }
}

/// One HTTP/1.1 request over a Unix domain socket, with a deadline.
enum UnixSocketHTTP {
    static func post(
        socketPath: String,
        path: String,
        body: [UInt8],
        timeout: TimeAmount
    ) async throws(KeyProviderError) -> (status: Int, body: [UInt8]) {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    }
                }
                .connect(unixDomainSocketPath: socketPath)
                .get()
        } catch {
            throw KeyProviderError("cannot reach dstack at \(socketPath): \(error)")
        }
        defer { channel.close(promise: nil) }
        let response = channel.eventLoop.makePromise(of: (Int, [UInt8]).self)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            response.fail(KeyProviderError("dstack did not answer within \(timeout)"))
        }
        do {
            try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: response))
            }.get()
            var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
            head.headers.add(name: "Host", value: "dstack")
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: "\(body.count)")
            head.headers.add(name: "Connection", value: "close")
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
            let (status, reply) = try await response.futureResult.get()
            deadline.cancel()
            return (status, reply)
        } catch let error as KeyProviderError {
            deadline.cancel()
            throw error
        } catch {
            deadline.cancel()
            throw KeyProviderError("dstack request failed: \(error)")
        }
    }

    /// Gathers the status and body of one response.
    final class ResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<(Int, [UInt8])>
        var status = 0
        var body: [UInt8] = []
        static let maximumBody = 1 << 20

        init(promise: EventLoopPromise<(Int, [UInt8])>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                status = Int(head.status.code)
            case .body(var buffer):
                guard body.count + buffer.readableBytes <= Self.maximumBody else {
                    promise.fail(KeyProviderError("dstack's answer is larger than 1 MiB"))
                    context.close(promise: nil)
                    return
                }
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                promise.succeed((status, body))
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(KeyProviderError("dstack connection error: \(error)"))
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(KeyProviderError("dstack closed the connection before answering"))
            context.fireChannelInactive()
        }
    }
}
