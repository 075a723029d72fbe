import Foundation
import NIOCore
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
        let listener = try await PeerTransport.listen(host: "127.0.0.1", port: 0, identity: try rack.node("SRV1"))
        let accepted = AsyncStream<PlatformId>.makeStream()
        let serving = Task {
            try await listener.run { peer in
                accepted.continuation.yield(peer.peer)
                try? await peer.channel.executeThenClose { _, _ in }
            }
        }
        defer { serving.cancel() }
        // A client with a foreign certificate but the right root to check the server.
        let intruder = try rack.node("EVIL", issuer: other)
        await #expect(throws: PeerChannelError.self) {
            _ = try await PeerTransport.connect(host: "127.0.0.1", port: listener.port, identity: intruder)
        }
        // A genuine client still gets in afterwards.
        let genuine = try await PeerTransport.connect(
            host: "127.0.0.1", port: listener.port, identity: try rack.node("GOOD"))
        #expect(genuine.peer.serial == "SRV1")
        try await genuine.channel.executeThenClose { _, _ in }
        var iterator = accepted.stream.makeAsyncIterator()
        #expect(await iterator.next()?.serial == "GOOD")
        await listener.close()
    }

    @Test("frames over 1 MiB are refused by the encoder")
    func oversize() throws {
        let encoder = FrameEncoder()
        var out = ByteBuffer()
        #expect(throws: PeerChannelError.self) {
            try encoder.encode(data: ByteBuffer(repeating: 0, count: (1 << 20) + 1), out: &out)
        }
        try encoder.encode(data: ByteBuffer(string: "ok"), out: &out)
        #expect(out.readableBytes == 6)
    }
}
