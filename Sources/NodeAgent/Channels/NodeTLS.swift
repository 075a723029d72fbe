import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

/// The TLS side of a node's identity: its device certificate chain, the
/// root of trust that signs its handshakes, and the manufacturing root every
/// peer must chain to. Channels are TLS 1.3 only, with certificates required
/// both ways.
///
/// - The device key never leaves the root of trust: BoringSSL gets a
///   `RootOfTrustTLSKey`, whose signatures ``RootOfTrust/sign(_:scheme:)``
///   makes.
/// - The peer's chain is judged by swift-certificates, not by BoringSSL's
///   trust store: a custom verification callback runs
///   ``DeviceIdentity/verifiedChain(_:intermediates:root:now:)`` on what the
///   peer presented (RFC 5280 to the manufacturing root, an end-entity
///   device certificate, a platform id in its subject). Anything else, or
///   any error, fails the handshake. The peer's platform id is read from the
///   verified certificate, never from a message.
public struct NodeTLSIdentity: Sendable {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    let root: NIOSSLCertificate
    /// The manufacturing root, as the verification callback checks against it.
    let rootCertificate: Certificate
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
        guard device.publicKey == rootOfTrust.publicKey else {
            throw PeerChannelError(
                "cannot load the node's TLS identity: the device certificate is not for the root of trust's key")
        }
        do {
            chain = [try NIOSSLCertificate(device), try NIOSSLCertificate(intermediate)]
            certificate = device
            certificateDER = try chain[0].toDERBytes()
            self.root = try NIOSSLCertificate(root)
            rootCertificate = root
        } catch {
            throw PeerChannelError("cannot load the node's TLS identity: \(error)")
        }
        let signer = RootOfTrustTLSKey(rootOfTrust)
        guard !signer.signatureAlgorithms.isEmpty else {
            throw PeerChannelError("cannot load the node's TLS identity: the root of trust has no TLS 1.3 scheme")
        }
        key = NIOSSLPrivateKey(customPrivateKey: signer)
    }

    func configuration(server: Bool) -> TLSConfiguration {
        var configuration: TLSConfiguration
        // The trust roots are not what decides (the verification callback
        // replaces BoringSSL's verification); giving the manufacturing root
        // keeps BoringSSL from loading the system's trust store.
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
        // Certificates are required both ways. Nodes are named by platform
        // id in their certificates, not by host name.
        configuration.certificateVerification = .noHostnameVerification
        // Device keys are Ed25519 (default) or RSA; BoringSSL leaves Ed25519
        // out of TLS unless asked. What this node signs with is what its
        // root of trust offers (`RootOfTrustTLSKey.signatureAlgorithms`).
        configuration.verifySignatureAlgorithms = [
            .ed25519, .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512, .ecdsaSecp256R1Sha256,
        ]
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        return configuration
    }

    /// The TLS handler for one connection, with the verification callback;
    /// why it refused the peer goes to `refusal`.
    func handler(server: Bool, refusal: PeerRefusal) throws -> any ChannelHandler {
        let context = try NIOSSLContext(configuration: configuration(server: server))
        let root = rootCertificate
        let verify: NIOSSLCustomVerificationCallbackWithMetadata = { presented, promise in
            Self.verify(presented, root: root, refusal: refusal, promise: promise)
        }
        return server
            ? NIOSSLServerHandler(context: context, customVerificationCallbackWithMetadata: verify)
            : try NIOSSLClientHandler(
                context: context, serverHostname: nil, customVerificationCallbackWithMetadata: verify)
    }

    /// Judges the chain a peer presented (leaf first) with swift-certificates
    /// and completes `promise` with the validated chain, or `.failed` on
    /// anything wrong or any error (recorded in `refusal`): the handshake
    /// then fails.
    static func verify(
        _ presented: [NIOSSLCertificate],
        root: Certificate,
        refusal: PeerRefusal,
        promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>
    ) {
        guard let encoded = try? presented.map({ try $0.toDERBytes() }), !encoded.isEmpty else {
            refusal.record("the peer presented no certificate that encodes")
            promise.succeed(.failed)
            return
        }
        // swift-certificates' verifier is async; it runs on an executor of
        // its own so that a handshake never waits for Swift's cooperative
        // pool, whatever else the process is doing there.
        Task(executorPreference: VerificationExecutor.shared) {
            do {
                let certificates = try encoded.map { try Certificate(derEncoded: $0) }
                let (_, chain) = try await DeviceIdentity.verifiedChain(
                    certificates[0], intermediates: Array(certificates.dropFirst()), root: root)
                let validated = try chain.map { try NIOSSLCertificate($0) }
                promise.succeed(.certificateVerified(VerificationMetadata(NIOSSL.ValidatedCertificateChain(validated))))
            } catch {
                refusal.record("\(error)")
                promise.succeed(.failed)
            }
        }
    }
}

/// Runs the peer-certificate verification tasks on Dispatch's threads,
/// outside Swift's cooperative pool.
final class VerificationExecutor: TaskExecutor {
    static let shared = VerificationExecutor()
    private let queue = DispatchQueue(label: "keyrack.peer-verification")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// Why the verification callback refused the peer of one connection, for
/// the error the connection fails with.
final class PeerRefusal: Sendable {
    private let reason = Mutex<String?>(nil)

    func record(_ text: String) { reason.withLock { $0 = text } }
    var recorded: String? { reason.withLock { $0 } }
}

extension NIOSSLCertificate {
    /// The same certificate for BoringSSL.
    convenience init(_ certificate: Certificate) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        try self.init(bytes: serializer.serializedBytes, format: .der)
    }
}

/// The device key as BoringSSL sees it: a custom private key whose every
/// signature the root of trust makes, so no key material is handed to TLS.
/// TLS 1.3 only: it offers the root of trust's TLS 1.3 schemes and never
/// decrypts. BoringSSL passes the message to sign whole (not a digest), for
/// Ed25519 and RSA-PSS alike; the root of trust hashes as the scheme says.
/// Signing runs on NIO's thread pool, since a hardware root of trust may
/// block.
struct RootOfTrustTLSKey: NIOSSLCustomPrivateKey, Hashable {
    let rootOfTrust: any RootOfTrust
    let publicKey: Certificate.PublicKey

    init(_ rootOfTrust: any RootOfTrust) {
        self.rootOfTrust = rootOfTrust
        publicKey = rootOfTrust.publicKey
    }

    var signatureAlgorithms: [SignatureAlgorithm] {
        rootOfTrust.signatureSchemes.filter(\.allowedInTLS13).map { SignatureAlgorithm(rawValue: $0.rawValue) }
    }

    func sign(channel: any Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard let scheme = DeviceSignatureScheme(rawValue: algorithm.rawValue), scheme.allowedInTLS13 else {
            return channel.eventLoop.makeFailedFuture(
                RootOfTrustError("TLS asked for signature scheme 0x\(String(algorithm.rawValue, radix: 16))"))
        }
        let message = Array(data.readableBytesView)
        let rootOfTrust = rootOfTrust
        return NIOThreadPool.singleton.runIfActive(eventLoop: channel.eventLoop) {
            ByteBuffer(bytes: try rootOfTrust.sign(message, scheme: scheme))
        }
    }

    func decrypt(channel: any Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(RootOfTrustError("the device key does not decrypt (TLS 1.3 only)"))
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.publicKey == rhs.publicKey }
    func hash(into hasher: inout Hasher) { hasher.combine(publicKey) }
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
    let refusal: PeerRefusal
    let deadline: TimeAmount
    private var state = State.handshaking
    private var timeout: Scheduled<Void>?

    /// `deadline`: how long the peer has, from the connection, to complete
    /// the TLS handshake and greet; a peer that connects and stalls is
    /// dropped instead of holding a connection open for ever.
    init(promise: EventLoopPromise<VerifiedPeer>, refusal: PeerRefusal, deadline: TimeAmount) {
        self.promise = promise
        self.refusal = refusal
        self.deadline = deadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let seconds = Double(deadline.nanoseconds) / 1e9
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
            switch state {
            case .handshaking, .awaitingHello:
                fail(
                    PeerChannelError("the peer did not complete the TLS handshake and greeting within \(seconds) s"),
                    context: context)
            case .established, .failed:
                break
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, case .handshaking = state {
            do {
                let handler = try context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
                // The leaf of the chain the verification callback validated;
                // without one the peer was never verified.
                guard let certificate = handler.peerValidatedCertificateChain?.leaf else {
                    throw PeerChannelError("the peer's certificate was not verified")
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
            timeout?.cancel()
            promise.succeed(peer)
            if buffered.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffered)) }
        case .handshaking, .failed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let reason = refusal.recorded {
            fail(PeerChannelError("refused the peer's certificate: \(reason)"), context: context)
        } else {
            fail(PeerChannelError("TLS handshake failed: \(error)"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(
            PeerChannelError("the connection closed before the channel was established (refused by the peer?)"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        // A connection that failed before it was active never sees channelInactive.
        promise.fail(PeerChannelError("the connection ended before the channel was established"))
    }

    private func fail(_ error: PeerChannelError, context: ChannelHandlerContext) {
        if case .established = state {
            context.fireErrorCaught(error)
        }
        state = .failed
        timeout?.cancel()
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
        promise: EventLoopPromise<VerifiedPeer>,
        handshakeTimeout: Duration
    ) throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let refusal = PeerRefusal()
        try channel.pipeline.syncOperations.addHandler(try identity.handler(server: server, refusal: refusal))
        try channel.pipeline.syncOperations.addHandler(
            PeerIdentityHandler(promise: promise, refusal: refusal, deadline: TimeAmount(handshakeTimeout)))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
    }

    /// How long a peer has to complete the TLS handshake and greeting.
    public static let defaultHandshakeTimeout = Duration.seconds(20)

    /// Connects to a peer and completes the handshake.
    public static func connect(
        host: String,
        port: Int,
        identity: NodeTLSIdentity,
        handshakeTimeout: Duration = defaultHandshakeTimeout,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(PeerChannelError) -> PeerChannel {
        do {
            let (channel, promise) = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: VerifiedPeer.self)
                        let wrapped = try configure(
                            channel, identity: identity, server: false, promise: promise,
                            handshakeTimeout: handshakeTimeout)
                        return (wrapped, promise)
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
    /// whose handshake succeeds, within `handshakeTimeout`, to `accept`.
    public static func listen(
        host: String,
        port: Int,
        identity: NodeTLSIdentity,
        handshakeTimeout: Duration = defaultHandshakeTimeout,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(PeerChannelError) -> PeerListener {
        do {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: VerifiedPeer.self)
                        let wrapped = try configure(
                            channel, identity: identity, server: true, promise: promise,
                            handshakeTimeout: handshakeTimeout)
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
