import Foundation
import KeyrackCore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

/// Why a channel could not be established or used.
public typealias PeerChannelError = CodedError<PeerChannelErrorCode>

/// The codes of ``PeerChannelError``.
public struct PeerChannelErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// This node's TLS identity (its certificates, or its root of trust's key) cannot be used.
    public static let identity = PeerChannelErrorCode("NODE-PEER-IDENTITY")
    /// The connection to the peer cannot be made.
    public static let connect = PeerChannelErrorCode("NODE-PEER-CONNECT")
    /// The listening socket cannot be set up.
    public static let listen = PeerChannelErrorCode("NODE-PEER-LISTEN")
    /// The TLS handshake or the greeting failed, or the connection ended before the channel was established.
    public static let handshake = PeerChannelErrorCode("NODE-PEER-HANDSHAKE")
    /// The peer's certificate was refused, not verified, or names no platform.
    public static let certificate = PeerChannelErrorCode("NODE-PEER-CERTIFICATE")
    /// The handshake or the attestation exchange did not finish in time.
    public static let timeout = PeerChannelErrorCode("NODE-PEER-TIMEOUT")
    /// An attestation frame is malformed.
    public static let malformed = PeerChannelErrorCode("NODE-PEER-MALFORMED")
    /// This node refused the peer's attestation (the reason names the rule).
    public static let refused = PeerChannelErrorCode("NODE-PEER-REFUSED")
    /// The peer refused this node's attestation (the reason quotes the peer's).
    public static let refusedByPeer = PeerChannelErrorCode("NODE-PEER-REFUSED-BY-PEER")
    /// This node gave up the attestation: it cannot attest itself.
    public static let aborted = PeerChannelErrorCode("NODE-PEER-ABORTED")
    /// The peer gave up the attestation on its side (the reason quotes the peer's).
    public static let abortedByPeer = PeerChannelErrorCode("NODE-PEER-ABORTED-BY-PEER")
    /// The connection closed, or could not be written, during the attestation exchange.
    public static let closed = PeerChannelErrorCode("NODE-PEER-CLOSED")
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
    let certificateDeadline: TimeAmount
    private var state = State.handshaking
    private var timeout: Scheduled<Void>?
    private var certificateTimeout: Scheduled<Void>?

    /// How long a peer has, from the connection, to get its certificate to
    /// the verification callback, by default: an unauthenticated connection
    /// holds a handshake slot for this long at most (review finding M5).
    static let defaultCertificateDeadline = TimeAmount.seconds(5)

    /// `deadline`: how long the peer has, from the connection, to complete
    /// the TLS handshake and greet; a peer that connects and stalls is
    /// dropped instead of holding a connection open for ever.
    /// `certificateDeadline` (at most `deadline`): how long, from the
    /// connection, until its certificate must have arrived.
    init(
        promise: EventLoopPromise<VerifiedPeer>, refusal: PeerRefusal, deadline: TimeAmount,
        certificateDeadline: TimeAmount = defaultCertificateDeadline
    ) {
        self.promise = promise
        self.refusal = refusal
        self.deadline = deadline
        self.certificateDeadline = min(certificateDeadline, deadline)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let certificateSeconds = Double(certificateDeadline.nanoseconds) / 1e9
        certificateTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: certificateDeadline) { [self] in
            guard case .handshaking = state, !refusal.hasCertificate else { return }
            fail(
                PeerChannelError(.timeout, "the peer sent no certificate within \(certificateSeconds) s"),
                context: context)
        }
        let seconds = Double(deadline.nanoseconds) / 1e9
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { [self] in
            switch state {
            case .handshaking, .awaitingHello:
                fail(
                    PeerChannelError(
                        .timeout, "the peer did not complete the TLS handshake and greeting within \(seconds) s"),
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
                    throw PeerChannelError(.certificate, "the peer's certificate was not verified")
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
                fail(
                    PeerChannelError(.certificate, "the peer's certificate names no platform: \(error)"),
                    context: context)
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
                fail(PeerChannelError(.handshake, "the peer did not greet as a keyrack node"), context: context)
                return
            }
            state = .established
            timeout?.cancel()
            certificateTimeout?.cancel()
            promise.succeed(peer)
            if buffered.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffered)) }
        case .handshaking, .failed:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let reason = refusal.recorded {
            fail(PeerChannelError(.certificate, "refused the peer's certificate: \(reason)"), context: context)
        } else {
            fail(PeerChannelError(.handshake, "TLS handshake failed: \(error)"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(
            PeerChannelError(
                .handshake, "the connection closed before the channel was established (refused by the peer?)"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        certificateTimeout?.cancel()
        // A connection that failed before it was active never sees channelInactive.
        promise.fail(PeerChannelError(.handshake, "the connection ended before the channel was established"))
    }

    private func fail(_ error: PeerChannelError, context: ChannelHandlerContext) {
        if case .established = state {
            context.fireErrorCaught(error)
        }
        state = .failed
        timeout?.cancel()
        certificateTimeout?.cancel()
        promise.fail(error)
        context.close(promise: nil)
    }
}
