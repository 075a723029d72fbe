import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

extension Harness {
    /// Sets every node up in LRTQ (threshold N/2 + 1 unless given) and
    /// connects them all. Returns the LRTQ secret the dealer drew.
    mutating func setUpLrtq(threshold: Int? = nil, connect: Bool = true) throws -> RackSecret {
        var dealer = SeededRandomSource(seed: 7)
        let setup = try Lrtq.setUp(rackId: rackId, members: Set(ids), threshold: threshold, using: &dealer)
        for id in ids {
            let state = PersistentState(
                lrtq: setup.states[id]!,
                configurations: [:],
                shares: [:],
                committedEpochs: [],
                expunged: nil
            )
            nodes[id] = Node(platformId: id, rackId: rackId, persistentState: state)
            drain(id)
        }
        if connect { connectAll() }
        return setup.secret
    }

    mutating func upgrade(_ coordinator: PlatformId, epoch: Epoch, members: [PlatformId]? = nil)
        throws(ReconfigureError)
    {
        let group = members ?? ids
        let request = UpgradeFromLrtqRequest(
            rackId: rackId,
            epoch: epoch,
            members: Set(group),
            threshold: group.count / 2 + 1
        )
        defer { drain(coordinator) }
        try nodes[coordinator]!.upgradeFromLrtq(request, using: &random)
    }

    /// Restarts `id` from what it persisted (volatile state lost).
    mutating func restart(_ id: PlatformId) {
        nodes[id] = Node(platformId: id, rackId: rackId, persistentState: nodes[id]!.persistentState)
        drain(id)
    }
}

/// A share whose digest is not among the 255 LRTQ digests.
let forgedShare = try! Share(x: 2, y: SecretBytes([UInt8](repeating: 0xAB, count: 32)))

@Suite("LRTQ setup")
struct LrtqSetupTests {
    static let rack = RackId(bytes: Array(0..<16))!
    static let ids = (0..<5).map { PlatformId(part: "913", serial: "S\(100 + $0)") }

    @Test("255 shares: one in the clear per member, the spares split evenly and encrypted, all 255 digests everywhere")
    func setUp() throws {
        var random = SeededRandomSource(seed: 3)
        let setup = try Lrtq.setUp(rackId: Self.rack, members: Set(Self.ids), using: &random)
        #expect(setup.states.count == 5)
        var xs: [UInt8] = []
        let digests = setup.states[Self.ids[0]]!.shareDigests
        #expect(digests.count == 255)
        #expect(Set(digests).count == 255)
        for (index, id) in Self.ids.enumerated() {
            let state = try #require(setup.states[id])
            #expect(state.shareDigests == digests)
            #expect(state.threshold == 3)
            #expect(state.share.x == UInt8(index + 1))
            #expect(state.isKnown(state.share))
            xs.append(state.share.x)
            // 250 spares over 5 members: 50 each.
            #expect(state.spareShares.count == 50)
            for spare in state.spareShares {
                xs.append(spare.x)
                let opened = try #require(Lrtq.open(spare, secret: setup.secret, rackId: Self.rack))
                #expect(opened.x == spare.x)
                #expect(state.isKnown(opened))
            }
        }
        #expect(xs.sorted() == Array(1...255))
        // Any K of the 255 shares rebuild the secret: here two members' shares and a spare.
        let spare = Lrtq.open(setup.states[Self.ids[4]]!.spareShares[7], secret: setup.secret, rackId: Self.rack)!
        let combined = try Shamir.combine(
            [setup.states[Self.ids[0]]!.share, setup.states[Self.ids[3]]!.share, spare],
            threshold: 3
        )
        #expect(RackSecret(combined) == setup.secret)
    }

    @Test("spare shares do not open under another secret or another rack, nor after tampering")
    func spareEncryption() throws {
        var random = SeededRandomSource(seed: 4)
        let setup = try Lrtq.setUp(rackId: Self.rack, members: Set(Self.ids), using: &random)
        let spare = setup.states[Self.ids[1]]!.spareShares[0]
        let other = RackSecret.random(using: &random)
        #expect(Lrtq.open(spare, secret: other, rackId: Self.rack) == nil)
        #expect(Lrtq.open(spare, secret: setup.secret, rackId: RackId(bytes: Array(1...16))!) == nil)
        var bytes = spare.ciphertext
        bytes[0] ^= 1
        #expect(
            Lrtq.open(EncryptedLrtqShare(x: spare.x, ciphertext: bytes)!, secret: setup.secret, rackId: Self.rack)
                == nil)
        #expect(EncryptedLrtqShare(x: 0, ciphertext: bytes) == nil)
        #expect(EncryptedLrtqShare(x: 9, ciphertext: Array(bytes.prefix(16))) == nil)
    }

    @Test("setup refuses N outside 3…254 and K outside 2 ≤ K < N")
    func setUpErrors() {
        var random = SeededRandomSource(seed: 5)
        let many = Set((0..<255).map { PlatformId(part: "913", serial: "M\($0)") })
        for members in [Set(Self.ids.prefix(2)), many] {
            do {
                _ = try Lrtq.setUp(rackId: Self.rack, members: members, using: &random)
                Issue.record("\(members.count) members accepted")
            } catch {
                #expect(error.code == .memberCountOutOfRange)
            }
        }
        for threshold in [1, 5] {
            do {
                _ = try Lrtq.setUp(rackId: Self.rack, members: Set(Self.ids), threshold: threshold, using: &random)
                Issue.record("threshold \(threshold) accepted")
            } catch {
                #expect(error.code == .thresholdOutOfRange)
            }
        }
    }

    @Test("the LRTQ state survives the persistent-state encoding; a malformed one is refused")
    func codable() throws {
        var random = SeededRandomSource(seed: 6)
        let setup = try Lrtq.setUp(rackId: Self.rack, members: Set(Self.ids), using: &random)
        var state = PersistentState.empty
        state.lrtq = setup.states[Self.ids[2]]
        let data = try JSONEncoder().encode(state)
        #expect(try JSONDecoder().decode(PersistentState.self, from: data) == state)
        let text = String(decoding: data, as: UTF8.self)
        let badShare = text.replacingOccurrences(of: "\"shareX\":3", with: "\"shareX\":0")
        #expect(badShare != text)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(PersistentState.self, from: Data(badShare.utf8))
        }
        let cipher = setup.states[Self.ids[2]]!.spareShares[0].ciphertext.hexString
        let badSpare = text.replacingOccurrences(of: cipher, with: "00")
        #expect(badSpare != text)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(PersistentState.self, from: Data(badSpare.utf8))
        }
    }
}

@Suite("LRTQ unlock and adding nodes")
struct LrtqUnlockTests {
    @Test("a node in LRTQ warns at start and unlocks epoch 1 by gathering K LRTQ shares")
    func unlock() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq()
        let node = rack.ids[3]
        #expect(rack.nodes[node]!.isInLrtq)
        // A restart warns that LRTQ is in use.
        var restarted = Node(platformId: node, rackId: rack.rackId, persistentState: rack.nodes[node]!.persistentState)
        #expect(restarted.drainOutput().warnings == [.lrtqDeprecated(.started)])

        #expect(try rack.nodes[node]!.loadRackSecret(1) == nil)
        let output = rack.nodes[node]!.drainOutput()
        #expect(output.warnings == [.lrtqDeprecated(.unlocking)])
        #expect(output.messages.count == 4)
        #expect(output.messages.allSatisfy { $0.message.kind == .getLrtqShare })
        for outgoing in output.messages { rack.inFlight.append((node, outgoing.to, outgoing.message)) }
        rack.deliverAll()
        #expect(try rack.nodes[node]!.loadRackSecret(1) == secret)
        // The peers that answered warned too.
        for peer in rack.ids where peer != node {
            #expect(rack.warnings[peer]?.contains(.lrtqDeprecated(.answeredShareRequest)) == true)
        }
        #expect(rack.allAlarms.isEmpty)
        // Only epoch 1 exists under LRTQ.
        #expect(throws: LoadRackSecretError(code: .notCommitted, epoch: 2)) {
            try rack.nodes[node]!.loadRackSecret(2)
        }
    }

    @Test("peers that answer GetLrtqShare warn; nodes never in LRTQ ignore LRTQ messages")
    func answering() throws {
        var rack = Harness(count: 3)
        _ = try rack.setUpLrtq()
        let asker = rack.ids[0]
        rack.nodes[rack.ids[1]]!.received(from: asker, message: Message(rackId: rack.rackId, kind: .getLrtqShare))
        let output = rack.nodes[rack.ids[1]]!.drainOutput()
        #expect(output.warnings == [.lrtqDeprecated(.answeredShareRequest)])
        #expect(
            output.messages.map(\.message.kind) == [.lrtqShare(rack.nodes[rack.ids[1]]!.persistentState.lrtq!.share)])
        #expect("\(output.warnings[0])".contains("deprecated"))

        var fresh = Node(platformId: Harness.id(9), rackId: rack.rackId)
        fresh.received(from: asker, message: Message(rackId: rack.rackId, kind: .getLrtqShare))
        fresh.received(from: asker, message: Message(rackId: rack.rackId, kind: .lrtqShare(forgedShare)))
        #expect(fresh.drainOutput().isEmpty)
        #expect(throws: LoadRackSecretError(code: .noCommittedConfiguration, epoch: 1)) { try fresh.loadRackSecret(1) }
    }

    @Test("unlocking rejects a share with an unknown digest and a share presented twice")
    func unlockRejects() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq(connect: false)
        let node = rack.ids[0]
        #expect(try rack.nodes[node]!.loadRackSecret(1) == nil)
        _ = rack.nodes[node]!.drainOutput()
        let peerShare = rack.nodes[rack.ids[1]]!.persistentState.lrtq!.share
        rack.nodes[node]!.received(
            from: rack.ids[2], message: Message(rackId: rack.rackId, kind: .lrtqShare(forgedShare)))
        #expect(rack.nodes[node]!.rejectedShares == 1)
        rack.nodes[node]!.received(
            from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .lrtqShare(peerShare)))
        // ids[3] replays ids[1]'s share: a duplicate x-coordinate.
        rack.nodes[node]!.received(
            from: rack.ids[3], message: Message(rackId: rack.rackId, kind: .lrtqShare(peerShare)))
        #expect(rack.nodes[node]!.rejectedShares == 2)
        #expect(try rack.nodes[node]!.loadRackSecret(1) == nil)  // 2 of 3
        // A resend by a sender already counted is ignored, not rejected.
        rack.nodes[node]!.received(
            from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .lrtqShare(peerShare)))
        #expect(rack.nodes[node]!.rejectedShares == 2)
        let third = rack.nodes[rack.ids[4]]!.persistentState.lrtq!.share
        rack.nodes[node]!.received(from: rack.ids[4], message: Message(rackId: rack.rackId, kind: .lrtqShare(third)))
        #expect(try rack.nodes[node]!.loadRackSecret(1) == secret)
    }

    @Test("adding a node under LRTQ hands it a spare share, once; the new node unlocks like the others")
    func addNode() throws {
        var rack = Harness(count: 4)
        let secret = try rack.setUpLrtq()
        let donor = rack.ids[0]
        let spares = rack.nodes[donor]!.persistentState.lrtq!.spareShares
        // Not yet: the donor first rebuilds the secret that decrypts its spares.
        #expect(try rack.nodes[donor]!.handOutLrtqSpareShare() == nil)
        rack.drain(donor)
        rack.deliverAll()
        let package = try #require(try rack.nodes[donor]!.handOutLrtqSpareShare())
        let output = rack.nodes[donor]!.drainOutput()
        #expect(output.persistentStateChanged)
        #expect(output.warnings == [.lrtqDeprecated(.handedOutSpareShare)])
        #expect(rack.nodes[donor]!.persistentState.lrtq!.spareShares == Array(spares.dropFirst()))
        #expect(package.share.x == spares[0].x)
        #expect(package.isKnown(package.share))
        #expect(package.spareShares.isEmpty)
        #expect(package.threshold == 3)

        let newcomer = Harness.id(4)
        rack.ids.append(newcomer)
        let state = PersistentState(lrtq: package, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
        rack.nodes[newcomer] = Node(platformId: newcomer, rackId: rack.rackId, persistentState: state)
        rack.drain(newcomer)
        for id in rack.ids where id != newcomer {
            rack.connect(newcomer, id)
            rack.connect(id, newcomer)
        }
        #expect(try rack.load(newcomer, 1) == secret)
        #expect(rack.allAlarms.isEmpty)

        // The newcomer has no spares; a donor runs out eventually.
        #expect(throws: LrtqError.self) { try rack.nodes[newcomer]!.handOutLrtqSpareShare() }
        var handed = 1
        while (try? rack.nodes[donor]!.handOutLrtqSpareShare()) != nil { handed += 1 }
        #expect(handed == spares.count)
        do {
            _ = try rack.nodes[donor]!.handOutLrtqSpareShare()
            Issue.record("no spare left, yet one was handed out")
        } catch {
            #expect(error.code == .noSpareShare)
        }
    }

    @Test("handing out: a node not in LRTQ refuses; a spare that does not open raises an alarm")
    func handOutErrors() throws {
        var plain = Node(platformId: Harness.id(0), rackId: Harness(count: 3).rackId)
        do {
            _ = try plain.handOutLrtqSpareShare()
            Issue.record("a node without LRTQ state handed out a share")
        } catch {
            #expect(error.code == .notInLrtq)
        }

        var rack = Harness(count: 3)
        _ = try rack.setUpLrtq()
        let donor = rack.ids[1]
        var state = rack.nodes[donor]!.persistentState
        var corrupt = state.lrtq!.spareShares[0].ciphertext
        corrupt[3] ^= 0x40
        state.lrtq!.spareShares[0] = EncryptedLrtqShare(x: state.lrtq!.spareShares[0].x, ciphertext: corrupt)!
        rack.nodes[donor] = Node(platformId: donor, rackId: rack.rackId, persistentState: state)
        rack.connectAll()
        #expect(try rack.load(donor, 1) != nil)
        do {
            _ = try rack.nodes[donor]!.handOutLrtqSpareShare()
            Issue.record("a corrupt spare share was handed out")
        } catch {
            #expect(error.code == .spareShareInvalid)
        }
        #expect(rack.nodes[donor]!.drainOutput().alarms == [.rackSecretDecryptionFailed(epoch: 1)])
        #expect(rack.nodes[donor]!.persistentState.lrtq!.spareShares.count == state.lrtq!.spareShares.count)
    }

    @Test("an LRTQ node told it was expunged at a later epoch records it and drops LRTQ; epoch 1 is ignored")
    func expungedWhileInLrtq() throws {
        var rack = Harness(count: 3)
        _ = try rack.setUpLrtq()
        let node = rack.ids[2]
        let others = [rack.ids[0], rack.ids[1], Harness.id(9)]
        let atOne = TestOperator.exclusion(rack: rack.rackId, epoch: 1, members: others)
        rack.nodes[node]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .expunged(atOne)))
        #expect(rack.nodes[node]!.isInLrtq)
        let atThree = TestOperator.exclusion(rack: rack.rackId, epoch: 3, members: others)
        rack.nodes[node]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .expunged(atThree)))
        #expect(!rack.nodes[node]!.isInLrtq)
        #expect(rack.nodes[node]!.persistentState.lrtq == nil)
        #expect(rack.nodes[node]!.persistentState.expunged == ExpungedMetadata(epoch: 3, from: rack.ids[0]))
    }
}
