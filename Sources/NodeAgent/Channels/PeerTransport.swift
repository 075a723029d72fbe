import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

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
            throw PeerChannelError(.connect, "cannot connect to \(host):\(port): \(error)")
        }
    }

    /// Handshakes a listener runs at once, from anyone (review finding M5).
    public static let defaultMaximumHandshakes = 64
    /// Handshakes a listener runs at once from one remote address.
    public static let defaultMaximumHandshakesPerAddress = 8

    /// Listens on `host:port` (port 0: any free port) and hands each peer
    /// whose handshake succeeds, within `handshakeTimeout`, to `accept`.
    /// At most `maximumHandshakes` handshakes run at once, and at most
    /// `maximumHandshakesPerAddress` from one remote address: a connection
    /// beyond either is closed as it is accepted, so unauthenticated
    /// connections cannot pile up.
    public static func listen(
        host: String,
        port: Int,
        identity: NodeTLSIdentity,
        handshakeTimeout: Duration = defaultHandshakeTimeout,
        maximumHandshakes: Int = defaultMaximumHandshakes,
        maximumHandshakesPerAddress: Int = defaultMaximumHandshakesPerAddress,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(PeerChannelError) -> PeerListener {
        let limiter = HandshakeLimiter(total: maximumHandshakes, perAddress: maximumHandshakesPerAddress)
        do {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) {
                    channel -> EventLoopFuture<
                        (NIOAsyncChannel<ByteBuffer, ByteBuffer>, EventLoopFuture<VerifiedPeer>)
                    > in
                    let address = channel.remoteAddress?.ipAddress ?? "?"
                    guard limiter.acquire(address) else {
                        channel.close(promise: nil)
                        return channel.eventLoop.makeFailedFuture(
                            PeerChannelError(.connect, "too many handshakes in progress (from \(address))"))
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: VerifiedPeer.self)
                        promise.futureResult.whenComplete { _ in limiter.release(address) }
                        let wrapped = try configure(
                            channel, identity: identity, server: true, promise: promise,
                            handshakeTimeout: handshakeTimeout)
                        return (wrapped, promise.futureResult)
                    }
                }
            return PeerListener(server: server, identity: identity, handshakes: limiter)
        } catch {
            throw PeerChannelError(.listen, "cannot listen on \(host):\(port): \(error)")
        }
    }
}

/// Counts a listener's handshakes in progress, in all and by remote address.
final class HandshakeLimiter: Sendable {
    private let total: Int
    private let perAddress: Int
    private let state = Mutex<(count: Int, byAddress: [String: Int])>((0, [:]))

    init(total: Int, perAddress: Int) {
        self.total = total
        self.perAddress = perAddress
    }

    /// Takes a slot for a handshake from `address`, if one is free.
    func acquire(_ address: String) -> Bool {
        state.withLock { state in
            guard state.count < total, state.byAddress[address, default: 0] < perAddress else { return false }
            state.count += 1
            state.byAddress[address, default: 0] += 1
            return true
        }
    }

    /// Handshakes in progress.
    var inProgress: Int { state.withLock { $0.count } }

    /// Gives back the slot of a handshake from `address` that ended.
    func release(_ address: String) {
        state.withLock { state in
            state.count -= 1
            let left = state.byAddress[address, default: 1] - 1
            state.byAddress[address] = left > 0 ? left : nil
        }
    }
}

/// A listening socket for peer nodes.
public struct PeerListener: Sendable {
    let server: NIOAsyncChannel<(NIOAsyncChannel<ByteBuffer, ByteBuffer>, EventLoopFuture<VerifiedPeer>), Never>
    let identity: NodeTLSIdentity
    /// Its handshakes in progress.
    let handshakes: HandshakeLimiter

    /// The port it listens on.
    public var port: Int { server.channel.localAddress?.port ?? 0 }

    /// Accepts connections and calls `handle` with each authenticated peer
    /// (connections whose handshake fails are dropped). `handle` owns the
    /// channel and must use it through `executeThenClose`. Returns when the
    /// listener closes.
    public func run(
        _ handle: @escaping @Sendable (PeerChannel) async -> Void,
        handshakeFailed: @escaping @Sendable (PeerChannelError) -> Void = { _ in }
    ) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await (channel, identified) in inbound {
                    group.addTask {
                        let peer: VerifiedPeer
                        do {
                            peer = try await identified.get()
                        } catch {
                            handshakeFailed(
                                error as? PeerChannelError ?? PeerChannelError(.handshake, "\(error)"))
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
