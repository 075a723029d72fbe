import Attestation
import Foundation
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// The demo's steps, each against real node processes on loopback.
@Suite("A rack of node processes")
struct RackLifecycleTests {
    @Test("set up, unlock after a full restart, and unlock with two of five nodes down")
    func setUpRestartAndTwoDown() async throws {
        try await withRack(count: 5) { rack in
            let all = Array(0..<5)
            let committed = try await setUp(rack, all, threshold: 3)
            #expect(committed.epoch == Epoch(1))
            #expect(committed.memberCount == 5 && committed.threshold == 3)
            // Every node holds the same rack secret, and derives its own key for its data0.
            let check = try await expectSameSecret(rack, all)
            let key = try await diskKey(rack, 2)

            await rack.stopAll()
            for index in all { try rack.launch(index) }
            try await rack.waitUntil(all, "unlocked after a full restart") { $0.unlockedEpoch == committed.epoch }
            #expect(try await diskKey(rack, 2) == key)

            await rack.stopAll()
            for index in [0, 2, 4] { try rack.launch(index) }
            let up = try await rack.waitUntil([0, 2, 4], "unlocked with two down") {
                $0.unlockedEpoch == committed.epoch
            }
            #expect(up.allSatisfy { $0.connected.count == 2 })
            #expect(try await secretCheck(rack, 4) == check)
        }
    }

    @Test("RSA-4096 device keys (the seed's manufacturing flow) work end to end: attested channels, setup, restart")
    func rsaDeviceKeys() async throws {
        try await withRack(count: 3, keyType: .rsa4096) { rack in
            let committed = try await setUp(rack, [0, 1, 2], threshold: 2)
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            // K = 2: a node unlocks with one peer's share, so wait for both channels too.
            let statuses = try await rack.waitUntil([0, 1, 2], "unlocked and connected after a restart") {
                $0.unlockedEpoch == committed.epoch && $0.connected.count == 2
            }
            #expect(statuses.allSatisfy { $0.attestationEnforced })
            try await expectSameSecret(rack, [0, 2])
        }
    }

    @Test("nodes in (software) TDs attest with quotes: DCAP-verified and appraised against MRTD/RTMR/TCB allowlists")
    func tdxEvidence() async throws {
        let tee = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-td-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tee) }
        let made = try await runToCompletion(
            try keyrackExecutable(),
            ["tee", "init", "--dir", tee.path, "--now", "\(Int(Date().timeIntervalSince1970))"])
        #expect(made.status == 0, "\(made.errors)")
        let policy = Data(NodeAttestationPolicy.json(allowing: nil, softwareTEE: try SoftwareTEE(directory: tee)).utf8)
        try await withRack(count: 3, policy: policy, evidence: "software-tee:\(tee.path)") { rack in
            let committed = try await setUp(rack, [0, 1, 2], threshold: 2)
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            try await rack.waitUntil([0, 1, 2], "unlocked after a restart") { $0.unlockedEpoch == committed.epoch }
        }
        // The same nodes presenting software-RoT evidence are refused by a TDX-only policy.
        try await withRack(count: 3, policy: policy) { rack in
            for index in 0..<3 { try await rack.start(index) }
            let deadline = ContinuousClock.now + .seconds(20)
            while !rack.logTail(0, lines: 40).contains("refused"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(rack.logTail(0, lines: 40).contains("refused"))
            for status in await rack.statuses([0, 1, 2]) { #expect(status?.connected.isEmpty == true) }
        }
    }

    @Test("K−1 nodes stay locked: two of five with K = 3 never unlock")
    func belowThresholdStaysLocked() async throws {
        try await withRack(count: 5) { rack in
            let committed = try await setUp(rack, Array(0..<5), threshold: 3)
            await rack.stopAll()
            for index in [1, 3] { try await rack.start(index) }
            try await rack.waitUntil([1, 3], "connected to each other") { $0.connected.count == 1 }
            // Give them time to exchange what they have; they must still be locked.
            try await Task.sleep(for: .milliseconds(500))
            for status in await rack.statuses([1, 3]) {
                let status = try #require(status)
                #expect(status.committedEpoch == committed.epoch)
                #expect(status.unlockedEpoch == nil)
            }
            let refused = await #expect(throws: AdminError.self) { try await diskKey(rack, 1) }
            #expect(refused?.code == .locked)
        }
    }

    @Test("a rotation while one node is down commits, and the node catches up when it returns")
    func rotationWhileDownAndCatchUp() async throws {
        try await withRack(count: 5) { rack in
            let first = try await setUp(rack, Array(0..<5), threshold: 3)
            let oldKey = try await diskKey(rack, 0)
            await rack.stop(4)
            var rotation = try rack.rackOperator()
            rotation.waitForDownMembers = .zero  // node 5 catches up by itself, through CommitAdvance
            let rotated = try await rotation.run(.rotate)
            #expect(rotated.epoch > first.epoch)
            #expect(Set(rotated.members.keys) == Set(rack.members.prefix(5).map(\.platform)))
            try await rack.waitUntil([0, 1, 2, 3], "unlocked at the new epoch") { $0.unlockedEpoch == rotated.epoch }
            let newKey = try await diskKey(rack, 0)
            #expect(newKey != oldKey)
            // The old epoch's key is still derivable (to re-key the disk), from the chain.
            #expect(try await diskKey(rack, 0, epoch: first.epoch) == oldKey)

            try await rack.start(4)
            let caughtUp = try await rack.waitUntil([4], "caught up") { $0.unlockedEpoch == rotated.epoch }
            #expect(caughtUp[0].committedEpoch == rotated.epoch)
            #expect(
                caughtUp[0].rekey == [
                    DiskRekey(disk: "data0", from: DiskKeyVersion(first.epoch), to: DiskKeyVersion(rotated.epoch))
                ])
            #expect(try await secretCheck(rack, 4) == secretCheck(rack, 0))
            #expect(try await diskKey(rack, 4) != newKey)
        }
    }

    @Test("adding a node, then removing one: the removed node is expunged and refused")
    func addAndRemove() async throws {
        try await withRack(count: 5) { rack in
            try await setUp(rack, [0, 1, 2, 3])
            try await rack.start(4)
            let grown = try await rack.rackOperator([0, 1, 2, 3]).run(.add([rack.members[4].socket]))
            #expect(grown.memberCount == 5)
            #expect(grown.members[rack.members[4].platform] != nil)
            try await rack.waitUntil(Array(0..<5), "unlocked with the new node") { $0.unlockedEpoch == grown.epoch }
            try await expectSameSecret(rack, Array(0..<5))

            let removed = rack.members[1].platform
            let shrunk = try await rack.rackOperator().run(.remove([removed]))
            #expect(shrunk.members[removed] == nil && shrunk.memberCount == 4)
            try await rack.waitUntil([0, 2, 3, 4], "unlocked without the removed node") {
                $0.unlockedEpoch == shrunk.epoch
            }

            await rack.stop(1)
            try await rack.start(1)
            let expunged = try await rack.waitUntil([1], "told it was expunged") { $0.expunged != nil }
            #expect(expunged[0].expunged?.epoch == shrunk.epoch)
            #expect(expunged[0].unlockedEpoch == nil)
            let refused = await #expect(throws: AdminError.self) { try await diskKey(rack, 1) }
            #expect(refused?.code == .expunged)
            // Re-running the removal finds it done and changes nothing.
            let again = try await rack.rackOperator().run(.remove([removed]))
            #expect(again.epoch == shrunk.epoch)
        }
    }
}
