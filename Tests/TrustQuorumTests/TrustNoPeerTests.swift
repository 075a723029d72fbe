import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

/// Review finding H1 and "Trust: no single peer's word" in trust-quorum.md:
/// an admitted peer's forged `Expunged`, `CommitAdvance` or `Prepare`
/// changes nothing; only the operator's signatures do.
@Suite("Trust no single peer: signed tickets and commits")
struct TrustNoPeerTests {
    /// A rack of 4 set up at epoch 1, and a rotation to epoch 2 prepared everywhere but not committed.
    static func rotated() throws -> (Harness, Configuration) {
        var rack = Harness(count: 4)
        try rack.setUp()
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        return (rack, try #require(rack.nodes[rack.ids[0]]!.persistentState.configurations[2]))
    }

    @Test("a forged Expunged (unsigned, or signed by another key) deletes nothing and is counted with its sender")
    func forgedExpunged() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let (forger, target) = (rack.ids[3], rack.ids[1])
        let before = rack.nodes[target]!.persistentState
        let others = rack.ids.filter { $0 != target }
        for signed in [
            TestOperator.exclusion(rack: rack.rackId, epoch: 2, members: others, by: TestOperator.forger),
            TestOperator.exclusion(
                rack: rack.rackId, epoch: Epoch(UInt64.max), members: others, by: TestOperator.forger),
            SignedConfiguration(
                TestOperator.exclusion(rack: rack.rackId, epoch: 2, members: others).configuration,
                signature: TestOperator.junk),
        ] {
            rack.nodes[target]!.received(from: forger, message: Message(rackId: rack.rackId, kind: .expunged(signed)))
            let output = rack.nodes[target]!.drainOutput()
            #expect(!output.persistentStateChanged && output.messages.isEmpty)
            #expect(output.refusals.map(\.from) == [forger])
        }
        #expect(rack.nodes[target]!.persistentState == before)
        #expect(rack.nodes[target]!.rejectedMessages == 3)
        // The rack still unlocks from the target's share.
        let secret = try rack.load(rack.ids[0], 1)
        #expect(secret != nil)
    }

    @Test("a signed Expunged that lists this node is refused; one that leaves it out is recorded, older shares deleted")
    func signedExpunged() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let target = rack.ids[1]
        let listing = TestOperator.exclusion(rack: rack.rackId, epoch: 2, members: rack.ids)
        rack.nodes[target]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .expunged(listing)))
        #expect(rack.nodes[target]!.drainOutput().refusals.count == 1)
        #expect(rack.nodes[target]!.persistentState.expunged == nil)
        let leaving = TestOperator.exclusion(rack: rack.rackId, epoch: 2, members: rack.ids.filter { $0 != target })
        rack.nodes[target]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .expunged(leaving)))
        #expect(rack.nodes[target]!.drainOutput().persistentStateChanged)
        #expect(rack.nodes[target]!.persistentState.expunged == ExpungedMetadata(epoch: 2, from: rack.ids[0]))
        #expect(rack.nodes[target]!.persistentState.shares.isEmpty)
        #expect(rack.nodes[target]!.admittedPeers == [])
    }

    @Test("a forged CommitAdvance commits and prunes nothing; the operator's commit signature is what counts")
    func forgedCommitAdvance() throws {
        var (rack, config) = try Self.rotated()
        let (forger, target) = (rack.ids[3], rack.ids[2])
        let before = rack.nodes[target]!.persistentState
        for signer in [TestOperator.forger] {
            let forged = TestOperator.signed(config, by: signer)
            rack.nodes[target]!.received(
                from: forger, message: Message(rackId: rack.rackId, kind: .commitAdvance(forged)))
        }
        // A genuine commit signature of epoch 1 over the epoch-2 configuration does not pass either.
        let wrong = SignedConfiguration(
            config, signature: try #require(before.commitSignatures[1]))
        rack.nodes[target]!.received(from: forger, message: Message(rackId: rack.rackId, kind: .commitAdvance(wrong)))
        let output = rack.nodes[target]!.drainOutput()
        #expect(!output.persistentStateChanged)
        #expect(output.refusals.count == 2 && output.refusals.allSatisfy { $0.from == forger })
        #expect(rack.nodes[target]!.persistentState == before)
        #expect(rack.nodes[target]!.persistentState.shares.keys.sorted() == [1, 2])
        // The operator's signature commits it.
        rack.nodes[target]!.received(
            from: forger, message: Message(rackId: rack.rackId, kind: .commitAdvance(TestOperator.signed(config))))
        #expect(rack.nodes[target]!.persistentState.latestCommittedEpoch == 2)
        #expect(rack.nodes[target]!.persistentState.commitSignatures[2] == TestOperator.signed(config).signature)
        #expect(rack.nodes[target]!.persistentState.shares.keys.sorted() == [2])
    }

    @Test("commit and prepareAndCommit refuse a signature that does not verify (TQ-COMMIT-UNSIGNED)")
    func unsignedCommits() throws {
        var (rack, config) = try Self.rotated()
        let target = rack.ids[1]
        #expect(throws: CommitError(code: .unsigned, epoch: 2)) {
            try rack.nodes[target]!.commit(2, signature: TestOperator.signed(config, by: TestOperator.forger).signature)
        }
        #expect(throws: CommitError(code: .unsigned, epoch: 2)) {
            try rack.nodes[target]!.prepareAndCommit(TestOperator.signed(config, by: TestOperator.forger))
        }
        #expect(throws: CommitError(code: .unsigned, epoch: 2)) {
            try rack.nodes[target]!.expunge(
                TestOperator.exclusion(
                    rack: rack.rackId, epoch: 2, members: [rack.ids[0], rack.ids[2], rack.ids[3]],
                    by: TestOperator.forger))
        }
        #expect(throws: CommitError(code: .stillMember, epoch: 2)) {
            try rack.nodes[target]!.expunge(TestOperator.signed(config))
        }
        #expect(rack.nodes[target]!.persistentState.latestCommittedEpoch == 1)
        try rack.nodes[target]!.commit(2, signature: TestOperator.signed(config).signature)
        #expect(rack.nodes[target]!.persistentState.latestCommittedEpoch == 2)
    }

    @Test("a Prepare is accepted only under a signed ticket that names its sender and matches its configuration")
    func preparesNeedTheirTicket() throws {
        var rack = Harness(count: 4)
        rack.connectAll()
        try rack.reconfigure(rack.ids[0], epoch: 1, last: nil, members: rack.ids)
        let prepare = try #require(rack.inFlight.first { $0.to == rack.ids[1] })
        rack.inFlight.removeAll()
        guard case .prepare(let config, let share, let ticket) = prepare.message.kind else {
            Issue.record("not a Prepare")
            return
        }
        let target = rack.ids[1]
        var other = ticket.ticket.request
        other.threshold = 2
        let cases: [SignedTicket] = [
            // Signed by a key nobody pins.
            TestOperator.ticket(ticket.ticket.request, coordinator: rack.ids[0], by: TestOperator.forger),
            // Genuine, but for another K than the configuration's.
            TestOperator.ticket(other, coordinator: rack.ids[0]),
            // Genuine, but naming another coordinator.
            TestOperator.ticket(ticket.ticket.request, coordinator: rack.ids[2]),
        ]
        for forged in cases {
            rack.nodes[target]!.received(
                from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .prepare(config, share, forged)))
            let output = rack.nodes[target]!.drainOutput()
            #expect(!output.persistentStateChanged && output.messages.isEmpty && output.refusals.count == 1)
        }
        #expect(rack.nodes[target]!.persistentState == .empty)
        #expect(rack.nodes[target]!.rejectedMessages == 3)
        rack.nodes[target]!.received(from: rack.ids[0], message: prepare.message)
        #expect(rack.nodes[target]!.drainOutput().messages.map(\.message.kind) == [.prepareAck(1)])
        #expect(rack.nodes[target]!.persistentState.tickets[1] == ticket)
    }

    @Test("replays of old signed messages change nothing")
    func replays() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let first = try #require(rack.nodes[rack.ids[0]]!.persistentState.latestSignedConfiguration)
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        try rack.commitEverywhere(2, members: rack.ids)
        rack.deliverAll()
        let target = rack.ids[2]
        let before = rack.nodes[target]!.persistentState
        let oldPrepare = try #require(
            rack.sent.first {
                if case .prepare(let config, _, _) = $0.message.kind { return $0.to == target && config.epoch == 1 }
                return false
            })
        for kind in [oldPrepare.message.kind, .commitAdvance(first), .expunged(first)] {
            rack.nodes[target]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: kind))
            #expect(!rack.nodes[target]!.drainOutput().persistentStateChanged)
        }
        #expect(rack.nodes[target]!.persistentState == before)
    }

    @Test("admission is membership: the latest commit's members and a signed ticket's, nobody once expunged")
    func admission() throws {
        var rack = Harness(count: 5)
        let node = rack.ids[0]
        #expect(rack.nodes[node]!.admittedPeers == nil)  // before the first commit the address book decides
        let four = Array(rack.ids.prefix(4))
        rack.connectAll()
        try rack.reconfigure(rack.ids[1], epoch: 1, last: nil, members: four)
        rack.deliverAll()
        #expect(rack.nodes[node]!.admittedPeers == nil)
        #expect(rack.nodes[node]!.provisionalPeers == Set(four).subtracting([node]))
        try rack.commitEverywhere(1, members: four)
        rack.deliverAll()
        #expect(rack.nodes[node]!.admittedPeers == Set(four).subtracting([node]))
        // The fifth node is added: admitted once the signed ticket's Prepare is held.
        try rack.reconfigure(rack.ids[1], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        #expect(rack.nodes[node]!.admittedPeers == Set(rack.ids).subtracting([node]))
        try rack.commitEverywhere(2, members: rack.ids)
        rack.deliverAll()
        // The second node is removed: no longer admitted once the commit that leaves it out is held.
        let remaining = rack.ids.filter { $0 != rack.ids[3] }
        try rack.reconfigure(rack.ids[1], epoch: 3, last: 2, members: remaining)
        rack.deliverAll()
        try rack.commitEverywhere(3, members: remaining)
        rack.deliverAll()
        #expect(rack.nodes[node]!.admittedPeers == Set(remaining).subtracting([node]))
        #expect(rack.nodes[rack.ids[3]]!.admittedPeers?.contains(node) == true)  // it never learnt
    }
}
