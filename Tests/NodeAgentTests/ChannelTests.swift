import Foundation
import KeyrackCore
import NIOCore
import SecretSharing
import Testing
import TrustQuorum
import X509

@testable import NodeAgent

/// A manufacturing CA and device identities in a temporary directory.
final class Rack: @unchecked Sendable {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rack-\(UUID().uuidString)")
    let ca: ManufacturingCA

    init() throws {
        ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
    }

    /// A node's TLS identity, issued by `issuer` (this rack's CA by default).
    func node(_ serial: String, keyType: DeviceKeyType = .ed25519, issuer: ManufacturingCA? = nil) throws
        -> NodeTLSIdentity
    {
        try member(serial, keyType: keyType, issuer: issuer).identity
    }

    /// A node's TLS identity and the root of trust holding its key.
    func member(_ serial: String, keyType: DeviceKeyType = .ed25519, issuer: ManufacturingCA? = nil) throws
        -> (identity: NodeTLSIdentity, rootOfTrust: SoftwareRootOfTrust)
    {
        let signer = issuer ?? ca
        let (rootOfTrust, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent(serial),
            platform: PlatformId(part: "913-0000019", serial: serial),
            keyType: keyType
        )
        let identity = try NodeTLSIdentity(
            device: try signer.sign(csr),
            intermediate: signer.intermediate,
            root: ca.root,
            rootOfTrust: rootOfTrust
        )
        return (identity, rootOfTrust)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

@Suite("Node channels: TLS 1.3 with certificates both ways, over loopback")
struct ChannelTests {
    @Test(
        "both ends learn the other's platform id from its certificate, and frames flow",
        arguments: DeviceKeyType.allCases)
    func handshake(keyType: DeviceKeyType) async throws {
        let rack = try Rack()
        let listener = try await PeerTransport.listen(
            host: "127.0.0.1", port: 0, identity: try rack.node("SRV1", keyType: keyType))
        let (seen, record) = AsyncStream<(PlatformId, String)>.makeStream()
        let serving = Task {
            try await listener.run { peer in
                try? await peer.channel.executeThenClose { inbound, outbound in
                    for try await frame in inbound {
                        record.yield((peer.peer, String(buffer: frame)))
                        try await outbound.write(ByteBuffer(string: "ack:" + String(buffer: frame)))
                    }
                }
            }
        }
        defer { serving.cancel() }
        let client = try await PeerTransport.connect(
            host: "127.0.0.1",
            port: listener.port,
            identity: try rack.node("CLI2", keyType: keyType)
        )
        #expect(client.peer == PlatformId(part: "913-0000019", serial: "SRV1"))
        let reply = try await client.channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "hello"))
            var iterator = inbound.makeAsyncIterator()
            return try await iterator.next().map { String(buffer: $0) }
        }
        #expect(reply == "ack:hello")
        var iterator = seen.makeAsyncIterator()
        let first = await iterator.next()
        #expect(first?.0 == PlatformId(part: "913-0000019", serial: "CLI2"))
        #expect(first?.1 == "hello")
        await listener.close()
    }

    @Test("a node whose certificate comes from another CA is refused, both ways")
    func foreign() async throws {
        let rack = try Rack()
        let other = try ManufacturingCA.create(in: rack.directory.appendingPathComponent("other-ca"))
        // A foreign certificate, but the right root to check the peer.
        try await expectRefusedBothWays(try rack.node("EVIL", issuer: other), rack: rack, reason: "does not chain")
    }

    @Test(
        "a CA certificate presented as a node's leaf is refused, both ways",
        arguments: ["the intermediate", "a CA naming a platform"])
    func caAsLeaf(kind: String) async throws {
        let rack = try Rack()
        let impostor: NodeTLSIdentity
        if kind == "the intermediate" {
            // The intermediate's own certificate and key.
            let seed = try Data(contentsOf: rack.directory.appendingPathComponent("ca/intermediate.key"))
            impostor = try NodeTLSIdentity(
                device: rack.ca.intermediate, intermediate: rack.ca.root, root: rack.ca.root,
                rootOfTrust: try SoftwareRootOfTrust(seed: SecretBytes(seed)))
        } else {
            let rootOfTrust = try SoftwareRootOfTrust(seed: SecretBytes(Array(repeating: 9, count: 32)))
            let certificate = try rack.ca.issue(
                PlatformId(part: "913-0000019", serial: "EVIL"), key: rootOfTrust.publicKey,
                extensions: try ManufacturingCA.impostorExtensions)
            impostor = try NodeTLSIdentity(
                device: certificate, intermediate: rack.ca.intermediate, root: rack.ca.root, rootOfTrust: rootOfTrust)
        }
        // BoringSSL already refuses the intermediate, whose key usage does
        // not allow signing a handshake; the callback refuses the other.
        let reason = kind == "the intermediate" ? "KEY_USAGE_BIT_INCORRECT" : "is a CA certificate"
        try await expectRefusedBothWays(impostor, rack: rack, reason: reason)
    }

    @Test("a peer presenting more than its leaf and one intermediate is refused before any path search (H3)")
    func longChain() async throws {
        let rack = try Rack()
        // A genuine leaf of this rack's CA, with certificates appended to what it presents.
        let genuine = try rack.node("PAD")
        let padded = try genuine.presenting([rack.ca.intermediate, rack.ca.root])
        // Refused both ways; the same leaf as TLS normally sends it is admitted.
        try await expectRefusedBothWays(padded, rack: rack, reason: "at most 2 are accepted", genuine: genuine)
    }

    /// A genuine node refuses `impostor` as a client (and still lets a
    /// genuine client in afterwards: `genuine`, or a new node "GOOD"), and
    /// as a server, for `reason`.
    func expectRefusedBothWays(
        _ impostor: NodeTLSIdentity, rack: Rack, reason: String, genuine client: NodeTLSIdentity? = nil
    ) async throws {
        let listener = try await PeerTransport.listen(host: "127.0.0.1", port: 0, identity: try rack.node("SRV1"))
        let accepted = AsyncStream<PlatformId>.makeStream()
        let serving = Task {
            try await listener.run { peer in
                accepted.continuation.yield(peer.peer)
                try? await peer.channel.executeThenClose { _, _ in }
            }
        }
        defer { serving.cancel() }
        await expectRefused(port: listener.port, identity: impostor)
        let client = try client ?? rack.node("GOOD")
        let genuine = try await PeerTransport.connect(host: "127.0.0.1", port: listener.port, identity: client)
        #expect(genuine.peer.serial == "SRV1")
        try await genuine.channel.executeThenClose { _, _ in }
        var iterator = accepted.stream.makeAsyncIterator()
        #expect(await iterator.next() == (try PlatformIdentity.platformId(of: client.certificate.subject)))
        await listener.close()

        let rogue = try await PeerTransport.listen(host: "127.0.0.1", port: 0, identity: impostor)
        let rogueServing = Task {
            try await rogue.run { peer in
                Issue.record("the impostor's server accepted \(peer.peer)")
                try? await peer.channel.executeThenClose { _, _ in }
            }
        }
        defer { rogueServing.cancel() }
        await expectRefused(port: rogue.port, identity: try rack.node("DIAL"), reason: reason)
        await rogue.close()
    }

    /// Connecting to `port` as `identity` fails, saying `reason` when given
    /// (a channel that opens is closed and recorded as an issue).
    func expectRefused(port: Int, identity: NodeTLSIdentity, reason: String? = nil) async {
        do {
            let channel = try await PeerTransport.connect(host: "127.0.0.1", port: port, identity: identity)
            try? await channel.channel.executeThenClose { _, _ in }
            Issue.record("a channel was established with \(channel.peer)")
        } catch {
            if let reason { #expect(error.reason.contains(reason), "\(error)") }
        }
    }

    @Test("frames over 1 MiB are refused by the encoder")
    func oversize() throws {
        let encoder = FrameEncoder()
        var out = ByteBuffer()
        #expect(throws: WireError.self) {
            try encoder.encode(data: ByteBuffer(repeating: 0, count: (1 << 20) + 1), out: &out)
        }
        try encoder.encode(data: ByteBuffer(string: "ok"), out: &out)
        #expect(out.readableBytes == 6)
    }
}

/// A root of trust that forwards to another and records the schemes it was
/// asked to sign with.
final class RecordingRootOfTrust: RootOfTrust, @unchecked Sendable {
    let inner: SoftwareRootOfTrust
    private let lock = NSLock()
    private var recorded: [DeviceSignatureScheme] = []

    init(_ inner: SoftwareRootOfTrust) { self.inner = inner }

    var schemes: [DeviceSignatureScheme] { lock.withLock { recorded } }
    var publicKey: Certificate.PublicKey { inner.publicKey }
    var signatureSchemes: [DeviceSignatureScheme] { inner.signatureSchemes }

    func sign(_ message: [UInt8], scheme: DeviceSignatureScheme) throws(RootOfTrustError) -> [UInt8] {
        lock.withLock { recorded.append(scheme) }
        return try inner.sign(message, scheme: scheme)
    }

    func seal(_ plaintext: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> [UInt8]
    {
        try inner.seal(plaintext, purpose: purpose, authenticating: authenticatedData)
    }

    func open(_ sealed: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> SecretBytes
    {
        try inner.open(sealed, purpose: purpose, authenticating: authenticatedData)
    }

    func ledgerMarker() throws(RootOfTrustError) -> UInt64? { try inner.ledgerMarker() }

    func advanceLedgerMarker(to generation: UInt64) throws(RootOfTrustError) {
        try inner.advanceLedgerMarker(to: generation)
    }
}
