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
///   device certificate, a platform id in its subject). The chain is built
///   through the locally configured intermediate only: a peer may present
///   at most ``maximumPresentedCertificates`` (its leaf and, as TLS sends
///   it, its intermediate), and what it presents beyond the leaf is never
///   searched (review finding H3: a few kilobytes of same-name certificates
///   made the path search factorial). Anything else, or any error, fails
///   the handshake. The peer's platform id is read from the
///   verified certificate, never from a message.
public struct NodeTLSIdentity: Sendable {
    private(set) var chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    let root: NIOSSLCertificate
    /// The manufacturing root, as the verification callback checks against it.
    let rootCertificate: Certificate
    /// The intermediate that issued this node's certificate: the only one a
    /// peer's chain may go through.
    let intermediateCertificate: Certificate
    /// The most certificates a peer may present: its leaf and its intermediate.
    public static let maximumPresentedCertificates = 2
    /// The node's own leaf: its device certificate, as it presents it in
    /// every handshake.
    public let certificate: Certificate
    /// ``certificate`` in DER, the bytes the peer receives (and binds
    /// attestation evidence to).
    public let certificateDER: [UInt8]
    /// Who the handshake admits beyond a valid device chain (membership,
    /// denied serials); `nil`: every valid device.
    public var admission: PeerAdmission?

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
                .identity,
                "cannot load the node's TLS identity: the device certificate is not for the root of trust's key")
        }
        do {
            chain = [try NIOSSLCertificate(device), try NIOSSLCertificate(intermediate)]
            certificate = device
            certificateDER = try chain[0].toDERBytes()
            self.root = try NIOSSLCertificate(root)
            rootCertificate = root
            intermediateCertificate = intermediate
        } catch {
            throw PeerChannelError(.identity, "cannot load the node's TLS identity: \(error)")
        }
        let signer = RootOfTrustTLSKey(rootOfTrust)
        guard !signer.signatureAlgorithms.isEmpty else {
            throw PeerChannelError(
                .identity, "cannot load the node's TLS identity: the root of trust has no TLS 1.3 scheme")
        }
        key = NIOSSLPrivateKey(customPrivateKey: signer)
    }

    /// This identity presenting `extra` certificates after its own chain
    /// (what a hostile peer might send; for tests).
    func presenting(_ extra: [Certificate]) throws -> NodeTLSIdentity {
        var copy = self
        copy.chain += try extra.map { try NIOSSLCertificate($0) }
        return copy
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
        let intermediate = intermediateCertificate
        let admission = admission
        let verify: NIOSSLCustomVerificationCallbackWithMetadata = { presented, promise in
            Self.verify(
                presented, intermediate: intermediate, root: root, admission: admission, refusal: refusal,
                promise: promise)
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
        intermediate: Certificate,
        root: Certificate,
        admission: PeerAdmission? = nil,
        refusal: PeerRefusal,
        promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>
    ) {
        refusal.certificateArrived()
        guard presented.count <= maximumPresentedCertificates else {
            refusal.record(tooMany(presented.count))
            promise.succeed(.failed)
            return
        }
        guard let encoded = try? presented.map({ try $0.toDERBytes() }), !encoded.isEmpty else {
            refusal.record("the peer presented no certificate that encodes")
            promise.succeed(.failed)
            return
        }
        // swift-certificates' verifier is async; it runs on an executor of
        // its own so that a handshake never waits for Swift's cooperative
        // pool, whatever else the process is doing there.
        Task(executorPreference: VerificationExecutor.shared) {
            switch await judgeChain(encoded, intermediate: intermediate, root: root, admission: admission) {
            case .admitted(_, let chain):
                do {
                    let validated = try chain.map { try NIOSSLCertificate($0) }
                    promise.succeed(
                        .certificateVerified(VerificationMetadata(NIOSSL.ValidatedCertificateChain(validated))))
                } catch {
                    refusal.record("\(error)")
                    promise.succeed(.failed)
                }
            case .refused(let reason):
                refusal.record(reason)
                promise.succeed(.failed)
            }
        }
    }

    /// What the verification callback decided about a peer's chain.
    public enum ChainJudgement: Sendable {
        /// A device of `platform`, with the validated chain (leaf first, root last).
        case admitted(PlatformId, [Certificate])
        /// Refused, and why.
        case refused(String)
    }

    static func tooMany(_ count: Int) -> String {
        "the peer presented \(count) certificates: at most \(maximumPresentedCertificates) are accepted"
    }

    /// Judges the DER certificates a peer presented (leaf first) as the
    /// TLS verification callback does (review H3): more than
    /// ``maximumPresentedCertificates`` are refused before anything is
    /// parsed, and the leaf is verified against the locally configured
    /// intermediate and root only — nothing the peer sends besides its
    /// leaf enters the path search. Then the admission (membership, denied serials).
    public static func judgeChain(
        _ encoded: [[UInt8]], intermediate: Certificate, root: Certificate, admission: PeerAdmission? = nil
    ) async -> ChainJudgement {
        guard encoded.count <= maximumPresentedCertificates else { return .refused(tooMany(encoded.count)) }
        guard let first = encoded.first else { return .refused("the peer presented no certificate") }
        do {
            let leaf = try Certificate(derEncoded: first)
            let (platform, chain) = try await DeviceIdentity.verifiedChain(
                leaf, intermediates: [intermediate], root: root)
            let serial = NodeConfiguration.serialText(Array(leaf.serialNumber.bytes))
            if let reason = admission?.refusal(platform: platform, serial: serial) { return .refused(reason) }
            return .admitted(platform, chain)
        } catch {
            return .refused("\(error)")
        }
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
                RootOfTrustError(
                    .unsupported, "TLS asked for signature scheme 0x\(String(algorithm.rawValue, radix: 16))"))
        }
        let message = Array(data.readableBytesView)
        let rootOfTrust = rootOfTrust
        return RootOfTrustThreads.pool.runIfActive(eventLoop: channel.eventLoop) {
            ByteBuffer(bytes: try rootOfTrust.sign(message, scheme: scheme))
        }
    }

    func decrypt(channel: any Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(
            RootOfTrustError(.unsupported, "the device key does not decrypt (TLS 1.3 only)"))
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.publicKey == rhs.publicKey }
    func hash(into hasher: inout Hasher) { hasher.combine(publicKey) }
}

/// The threads the root of trust signs TLS handshakes on: a pool of their
/// own, so that a handshake waits for nothing but other handshakes (a
/// burst of cryptsetup work on NIO's shared pool once held peers'
/// handshakes past their certificate deadline).
enum RootOfTrustThreads {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
}
