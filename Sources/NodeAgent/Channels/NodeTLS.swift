import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import TrustQuorum
import X509

/// The TLS side of a node's identity: its device certificate chain and key
/// (from the root of trust), and the manufacturing root every peer must
/// chain to. Channels are TLS 1.3 only, with certificates required both ways;
/// the peer's platform id is read from its verified certificate, never from
/// a message.
public struct NodeTLSIdentity: Sendable {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    let root: NIOSSLCertificate
    /// The node's own leaf: its device certificate, as it presents it in
    /// every handshake.
    public let certificate: Certificate
    /// ``certificate`` in DER, the bytes the peer receives (and binds
    /// attestation evidence to).
    public let certificateDER: [UInt8]

    /// An identity from the device certificate, the intermediate that issued
    /// it, the manufacturing root, and the root of trust holding the key.
    public init(
        device: Certificate,
        intermediate: Certificate,
        root: Certificate,
        rootOfTrust: some RootOfTrust
    ) throws(PeerChannelError) {
        do {
            func convert(_ certificate: Certificate) throws -> NIOSSLCertificate {
                var serializer = DER.Serializer()
                try serializer.serialize(certificate)
                return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
            }
            chain = [try convert(device), try convert(intermediate)]
            certificate = device
            certificateDER = try chain[0].toDERBytes()
            self.root = try convert(root)
            let pem = try rootOfTrust.certificatePrivateKey.serializeAsPEM().pemString
            key = try NIOSSLPrivateKey(bytes: Array(pem.utf8), format: .pem)
        } catch {
            throw PeerChannelError("cannot load the node's TLS identity: \(error)")
        }
    }

    func configuration(server: Bool) -> TLSConfiguration {
        var configuration: TLSConfiguration
        if server {
            configuration = .makeServerConfigurationWithMTLS(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(key),
                trustRoots: .certificates([root])
            )
        } else {
            configuration = .makeClientConfiguration()
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(key)
            configuration.trustRoots = .certificates([root])
        }
        // Nodes are named by platform id in their certificates, not by host name.
        configuration.certificateVerification = .noHostnameVerification
        // Device keys are Ed25519 (default) or RSA; BoringSSL leaves Ed25519
        // out of TLS unless asked.
        let algorithms: [SignatureAlgorithm] = [
            .ed25519, .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512, .ecdsaSecp256R1Sha256,
        ]
        configuration.verifySignatureAlgorithms = algorithms
        configuration.signingSignatureAlgorithms = algorithms
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        return configuration
    }
}

/// Why a channel could not be established or used.
public struct PeerChannelError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The peer as the TLS handshake authenticated it: its platform id and its
/// verified leaf certificate.
struct VerifiedPeer: Sendable {
    let platform: PlatformId
    let certificate: Certificate
    let certificateDER: [UInt8]
}

/// Completes when the channel is established, with the peer's platform id
/// and certificate (verified against the manufacturing root), or fails.
///
/// Established means: the TLS handshake completed, the peer's certificate
/// names a platform, and the peer's hello frame arrived. The hello matters
/// because in TLS 1.3 a client finishes its handshake before the server has
/// judged the client's certificate: a refused client only learns it when the
/// server's hello never comes.
final class PeerIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let hello = Array("KRHELLO1".utf8)
    static var helloFrame: [UInt8] { [0, 0, 0, UInt8(hello.count)] + hello }

    private enum State {
        case handshaking
        case awaitingHello(VerifiedPeer, ByteBuffer)
        case established
        case failed
    }

    let promise: EventLoopPromise<VerifiedPeer>
    private var state = State.handshaking

    init(promise: EventLoopPromise<VerifiedPeer>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, case .handshaking = state {
            do {
                let handler = try context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
                guard let certificate = handler.peerCertificate else {
                    throw PeerChannelError("the peer presented no certificate")
                }
                let der = try certificate.toDERBytes()
                let parsed = try Certificate(derEncoded: der)
                let peer = VerifiedPeer(
                    platform: try PlatformIdentity.platformId(of: parsed.subject), certificate: parsed,
                    certificateDER: der)
                state = .awaitingHello(peer, context.channel.allocator.buffer(capacity: 16))
                context.writeAndFlush(NIOAny(ByteBuffer(bytes: Self.helloFrame)), promise: nil)
            } catch let error as PeerChannelError {
                fail(error, context: context)
            } catch {
                fail(PeerChannelError("the peer's certificate names no platform: \(error)"), context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .established:
            context.fireChannelRead(data)
        case .awaitingHello(let peer, var buffered):
            var incoming = unwrapInboundIn(data)
            buffered.writeBuffer(&incoming)
            let expected = Self.helloFrame
            guard buffered.readableBytes >= expected.count else {
                state = .awaitingHello(peer, buffered)
                return
            }
            guard buffered.readBytes(length: expected.count) == expected else {
                fail(PeerChannelError("the peer did not greet as a keyrack node"), context: context)
                return
            }
            state = .established
            promise.succeed(peer)
            if buffered.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffered)) }
        case .handshaking, .failed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(PeerChannelError("TLS handshake failed: \(error)"), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(
            PeerChannelError("the connection closed before the channel was established (refused by the peer?)"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A connection that failed before it was active never sees channelInactive.
        promise.fail(PeerChannelError("the connection ended before the channel was established"))
    }

    private func fail(_ error: PeerChannelError, context: ChannelHandlerContext) {
        if case .established = state {
            context.fireErrorCaught(error)
        }
        state = .failed
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// Frames of the trust-quorum wire: a 4-byte big-endian length and the
/// payload, at most 1 MiB.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    static let maximum = 1 << 20

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= Self.maximum else { throw PeerChannelError("a frame of \(length) bytes is over 1 MiB") }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

struct FrameEncoder: MessageToByteEncoder {
    typealias OutboundIn = ByteBuffer

    func encode(data: ByteBuffer, out: inout ByteBuffer) throws {
        guard data.readableBytes <= FrameDecoder.maximum else { throw PeerChannelError("a frame over 1 MiB") }
        out.writeInteger(UInt32(data.readableBytes))
        out.writeImmutableBuffer(data)
    }
}

/// An authenticated connection to a peer node.
public struct PeerChannel: Sendable {
    /// Which end of the TLS connection a node is.
    public enum Role: UInt8, Sendable, Hashable {
        /// The end that connected.
        case client = 1
        /// The end that accepted.
        case server = 2
    }

    /// The peer's platform id, from its verified certificate.
    public let peer: PlatformId
    /// Frames in and out.
    public let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    /// This node's end of the connection.
    public let role: Role
    /// The peer's leaf certificate, verified against the manufacturing root
    /// in the handshake.
    public let peerCertificate: Certificate
    /// ``peerCertificate`` in DER, as the peer presented it.
    public let peerCertificateDER: [UInt8]
    /// This node's leaf certificate in DER, as it presented it.
    public let localCertificateDER: [UInt8]

    init(
        peer verified: VerifiedPeer,
        channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        role: Role,
        local identity: NodeTLSIdentity
    ) {
        peer = verified.platform
        self.channel = channel
        self.role = role
        peerCertificate = verified.certificate
        peerCertificateDER = verified.certificateDER
        localCertificateDER = identity.certificateDER
    }
}

/// Listens for peer nodes and connects to them over mutually authenticated TLS 1.3.
public enum PeerTransport {
    static func configure(
        _ channel: any Channel,
        identity: NodeTLSIdentity,
        server: Bool,
        promise: EventLoopPromise<VerifiedPeer>
    ) throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let context = try NIOSSLContext(configuration: identity.configuration(server: server))
        let tls: any ChannelHandler =
            server
            ? NIOSSLServerHandler(context: context) : try NIOSSLClientHandler(context: context, serverHostname: nil)
        try channel.pipeline.syncOperations.addHandler(tls)
        try channel.pipeline.syncOperations.addHandler(PeerIdentityHandler(promise: promise))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
    }

    /// Connects to a peer and completes the handshake.
    public static func connect(
        host: String,
        port: Int,
        identity: NodeTLSIdentity,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(PeerChannelError) -> PeerChannel {
        do {
            let (channel, promise) = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: VerifiedPeer.self)
                        return (try configure(channel, identity: identity, server: false, promise: promise), promise)
                    }
                }
            do {
                let peer = try await promise.futureResult.get()
                return PeerChannel(peer: peer, channel: channel, role: .client, local: identity)
            } catch {
                // The wrapper must be finished even when the handshake failed.
                try? await channel.executeThenClose { _, _ in }
                throw error
            }
        } catch let error as PeerChannelError {
            throw error
        } catch {
            throw PeerChannelError("cannot connect to \(host):\(port): \(error)")
        }
    }

    /// Listens on `host:port` (port 0: any free port) and hands each peer
    /// whose handshake succeeds to `accept`.
    public static func listen(
        host: String,
        port: Int,
        identity: NodeTLSIdentity,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(PeerChannelError) -> PeerListener {
        do {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: VerifiedPeer.self)
                        let wrapped = try configure(channel, identity: identity, server: true, promise: promise)
                        return (wrapped, promise.futureResult)
                    }
                }
            return PeerListener(server: server, identity: identity)
        } catch {
            throw PeerChannelError("cannot listen on \(host):\(port): \(error)")
        }
    }
}

/// A listening socket for peer nodes.
public struct PeerListener: Sendable {
    let server: NIOAsyncChannel<(NIOAsyncChannel<ByteBuffer, ByteBuffer>, EventLoopFuture<VerifiedPeer>), Never>
    let identity: NodeTLSIdentity

    /// The port it listens on.
    public var port: Int { server.channel.localAddress?.port ?? 0 }

    /// Accepts connections and calls `handle` with each authenticated peer
    /// (connections whose handshake fails are dropped). `handle` owns the
    /// channel and must use it through `executeThenClose`. Returns when the
    /// listener closes.
    public func run(_ handle: @escaping @Sendable (PeerChannel) async -> Void) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await (channel, identified) in inbound {
                    group.addTask {
                        guard let peer = try? await identified.get() else {
                            // A failed handshake: close, and finish the wrapper.
                            try? await channel.executeThenClose { _, _ in }
                            return
                        }
                        await handle(PeerChannel(peer: peer, channel: channel, role: .server, local: identity))
                    }
                }
            }
        }
    }

    /// Stops listening.
    public func close() async {
        try? await server.channel.close()
    }
}
