import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

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
