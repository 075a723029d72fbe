import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum
import X509

/// Issue 13, item 8: a node removed by `rack remove` keeps its device key
/// and certificate. Used against the rack, they open nothing: every honest
/// node refuses them at the TLS handshake, nothing is deleted, and the rack
/// unlocks after a full restart.
@Suite("A removed node's own key opens nothing")
struct RemovedNodeTests {
    /// The removed node's TLS identity, from its files.
    static func identity(of member: LocalRack.Member) throws -> NodeTLSIdentity {
        let configuration = member.configuration
        func certificate(_ path: String) throws -> Certificate {
            try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8))
        }
        return try NodeTLSIdentity(
            device: try certificate(configuration.certificate),
            intermediate: try certificate(configuration.intermediate),
            root: try certificate(configuration.root),
            rootOfTrust: try SoftwareRootOfTrust(keyFile: configuration.deviceKey))
    }

    @Test("after rack remove, the removed node's key and certificate are refused by every honest node")
    func removedKeyIsRefused() async throws {
        try await withRack(count: 4) { rack in
            let first = try await setUp(rack, Array(0..<4), threshold: 2)
            let removed = rack.members[3]
            let shrunk = try await rack.rackOperator().run(.remove([removed.platform]))
            #expect(shrunk.members[removed.platform] == nil)
            let told = try #require(await rack.statuses([3])[0])
            #expect(told.expunged?.epoch == shrunk.epoch)
            await rack.stop(3)
            let before = try await rack.waitUntil([0, 1, 2], "unlocked after the removal") {
                $0.unlockedEpoch == shrunk.epoch
            }
            let keyBefore = try await diskKey(rack, 0)

            // Before the removal the same identity is a member: a handshake succeeds (the check can pass).
            #expect(first.members[removed.platform] != nil)
            let identity = try Self.identity(of: removed)
            for honest in rack.members.prefix(3) {
                let address = honest.configuration.listen
                let refused = await #expect(throws: PeerChannelError.self) {
                    let channel = try await PeerTransport.connect(
                        host: address.host, port: address.port, identity: identity, handshakeTimeout: .seconds(10))
                    try? await channel.channel.executeThenClose { _, _ in }
                }
                #expect(refused != nil, "\(honest.platform) let the removed node in")
            }
            // Nothing was deleted or changed on the honest nodes.
            let after = await rack.statuses([0, 1, 2]).compactMap { $0 }
            #expect(after.map(\.committedEpoch) == before.map(\.committedEpoch))
            #expect(after.allSatisfy { $0.expunged == nil && $0.alarms.isEmpty })
            #expect(after.allSatisfy { !$0.connected.contains(removed.platform) })
            // A full restart of the honest nodes unlocks again, with the same disk key.
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            try await rack.waitUntil([0, 1, 2], timeout: .seconds(60), "unlocked after a full restart") {
                $0.unlockedEpoch == shrunk.epoch
            }
            #expect(try await diskKey(rack, 0) == keyBefore)
        }
    }

    @Test("a member's key is admitted: the refusal above is membership, not a broken identity")
    func memberKeyIsAdmitted() async throws {
        try await withRack(count: 3) { rack in
            _ = try await setUp(rack, Array(0..<3), threshold: 2)
            await rack.stop(2)
            let identity = try Self.identity(of: rack.members[2])
            let address = rack.members[0].configuration.listen
            let channel = try await PeerTransport.connect(
                host: address.host, port: address.port, identity: identity, handshakeTimeout: .seconds(10))
            #expect(channel.peer == rack.members[0].platform)
            try? await channel.channel.executeThenClose { _, _ in }
        }
    }
}

/// Issue 13, item 5: a device certificate denied by serial number in a
/// node's configuration is refused from the next handshake on, after SIGHUP.
@Suite("Denied device certificates, reloaded on SIGHUP")
struct DeniedSerialTests {
    @Test("after SIGHUP a denied peer's channel is dropped and not re-established; undenied, it comes back")
    func deniedOnHangup() async throws {
        try await withRack(count: 3) { rack in
            _ = try await setUp(rack, Array(0..<3), threshold: 2)
            try await rack.waitUntil([0], "connected to both") { $0.connected.count == 2 }
            let denied = rack.members[2]
            let certificate = try Certificate(
                pemEncoded: String(contentsOfFile: denied.configuration.certificate, encoding: .utf8))
            let serial = NodeConfiguration.serialText(Array(certificate.serialNumber.bytes))
            var configuration = rack.members[0].configuration
            configuration.deniedSerials = [serial]
            try configuration.json().write(to: URL(fileURLWithPath: rack.members[0].configurationFile))
            rack.signal(0, SIGHUP)
            try await rack.waitUntil([0], "without the denied peer") {
                $0.connected == [rack.members[1].platform]
            }
            // It stays refused: the denied node keeps dialing and is refused in the handshake.
            try await Task.sleep(for: .seconds(2))
            let still = try #require(await rack.statuses([0])[0])
            #expect(!still.connected.contains(denied.platform))
            #expect(still.committedEpoch == 1 && still.unlockedEpoch == 1)
            // Undenied and reloaded: it comes back.
            configuration.deniedSerials = []
            try configuration.json().write(to: URL(fileURLWithPath: rack.members[0].configurationFile))
            rack.signal(0, SIGHUP)
            try await rack.waitUntil([0], timeout: .seconds(60), "connected to both again") { $0.connected.count == 2 }
        }
    }
}
