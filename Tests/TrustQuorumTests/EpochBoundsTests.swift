import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

/// Review findings M3 and M4: a `Prepare` at the end of the epoch space, and
/// a stream of `Prepare`s at rising epochs.
@Suite("Epoch bounds: nothing traps, nothing beyond reach of the last commit, one prepared configuration")
struct EpochBoundsTests {
    /// A well-formed `Prepare` of `epoch` from `coordinator` (a member) with
    /// `target`'s valid share, under a ticket the operator signed: the
    /// bounds hold even against what the operator's key signs.
    static func prepare(
        epoch: Epoch, from coordinator: PlatformId, to target: PlatformId, rack: Harness
    ) throws -> Message {
        var random = SeededRandomSource(seed: epoch.value)
        let members = rack.ids.sorted()
        let split = try Shamir.split(
            RackSecret.random(using: &random).bytes, threshold: members.count / 2 + 1, shares: members.count,
            using: &random)
        let shares = Dictionary(uniqueKeysWithValues: zip(members, split))
        let config = try Configuration(
            rackId: rack.rackId, epoch: epoch, coordinator: coordinator, members: shares.mapValues(\.digest),
            threshold: members.count / 2 + 1, encryptedRackSecrets: nil)
        let request = ReconfigureRequest(
            rackId: rack.rackId, epoch: epoch, lastCommittedEpoch: 1, members: Set(members),
            threshold: members.count / 2 + 1)
        return Message(
            rackId: rack.rackId,
            kind: .prepare(
                config, try #require(shares[target]), TestOperator.ticket(request, coordinator: coordinator)))
    }

    @Test("epoch arithmetic never traps: the epoch after 2^64−1 is none")
    func nextAtTheEnd() {
        #expect(Epoch(UInt64.max).next == nil)
        #expect(Epoch(41).next == Epoch(42))
        #expect(Epoch(UInt64.max).isWithinReach(of: nil) == false)
        #expect(Epoch(1 << 32).isWithinReach(of: nil))
        #expect(Epoch((1 << 32) + 1).isWithinReach(of: nil) == false)
        #expect(Epoch((1 << 32) + 7).isWithinReach(of: Epoch(7)))
        #expect(Epoch(3).isWithinReach(of: Epoch(UInt64.max)))
    }

    @Test(
        "a Prepare at 2^64−1 from a member is refused: nothing persisted, no ack, counted; the rack reconfigures after it"
    )
    func prepareAtTheEnd() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let (forger, target) = (rack.ids[3], rack.ids[1])
        let before = rack.nodes[target]!.persistentState
        for epoch in [Epoch(UInt64.max), Epoch(1 + (1 << 32) + 1)] {
            rack.nodes[target]!.received(
                from: forger, message: try Self.prepare(epoch: epoch, from: forger, to: target, rack: rack))
            let output = rack.nodes[target]!.drainOutput()
            #expect(output.messages.isEmpty)
            #expect(!output.persistentStateChanged)
        }
        #expect(rack.nodes[target]!.persistentState == before)
        #expect(rack.nodes[target]!.rejectedMessages == 2)
        #expect(rack.nodes[target]!.highestEpochSeen == 1)

        // The furthest epoch within reach is accepted.
        let furthest = Epoch(1 + (1 << 32))
        rack.nodes[target]!.received(
            from: forger, message: try Self.prepare(epoch: furthest, from: forger, to: target, rack: rack))
        #expect(rack.nodes[target]!.drainOutput().messages.map(\.message.kind) == [.prepareAck(furthest)])

        // An operator resuming from a poisoned report (2^64−1 seen) starts right above the commit.
        let committed = try #require(rack.nodes[rack.ids[0]]!.persistentState.latestCommittedConfiguration)
        var controlPlane = ControlPlane(
            rackId: rack.rackId, resumingFrom: committed, committedMembers: Set(rack.ids),
            highestEpoch: Epoch(UInt64.max))
        let action = try controlPlane.startReconfiguration(members: Set(rack.ids), available: Set(rack.ids))
        let request: ReconfigureRequest? = if case .reconfigure(_, let request)? = action { request } else { nil }
        #expect(try #require(request).epoch == 2)
    }

    @Test("a ticket beyond reach of the latest commit is refused by the coordinator (TQ-RECONF-EPOCH-REACH)")
    func ticketOutOfReach() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        for epoch in [Epoch(UInt64.max), Epoch(2 + (1 << 32))] {
            let error = #expect(throws: ReconfigureError.self) {
                try rack.reconfigure(rack.ids[0], epoch: epoch, last: 1, members: rack.ids)
            }
            #expect(error?.code == .epochOutOfReach)
        }
        try rack.reconfigure(rack.ids[0], epoch: Epoch(1 + (1 << 32)), last: 1, members: rack.ids)
        #expect(rack.nodes[rack.ids[0]]!.isCoordinating)
    }

    @Test("an upgrade ticket beyond reach of the LRTQ epoch is refused")
    func upgradeOutOfReach() throws {
        var rack = Harness(count: 3)
        _ = try rack.setUpLrtq()
        let error = #expect(throws: ReconfigureError.self) { try rack.upgrade(rack.ids[0], epoch: Epoch(UInt64.max)) }
        #expect(error?.code == .epochOutOfReach)
        #expect(!rack.nodes[rack.ids[0]]!.isCoordinating)
        try rack.upgrade(rack.ids[0], epoch: Epoch(1 + (1 << 32)))
        #expect(rack.nodes[rack.ids[0]]!.isCoordinating)
    }

    @Test("a CommitAdvance beyond reach is refused and counted; nothing is pruned")
    func commitAdvanceOutOfReach() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let (forger, target) = (rack.ids[2], rack.ids[0])
        let forged = try Self.prepare(epoch: Epoch(UInt64.max), from: forger, to: target, rack: rack)
        let config: Configuration? = if case .prepare(let config, _, _) = forged.kind { config } else { nil }
        let before = rack.nodes[target]!.persistentState
        rack.nodes[target]!.received(
            from: forger,
            message: Message(rackId: rack.rackId, kind: .commitAdvance(TestOperator.signed(try #require(config)))))
        #expect(!rack.nodes[target]!.drainOutput().persistentStateChanged)
        #expect(rack.nodes[target]!.persistentState == before)
        #expect(rack.nodes[target]!.rejectedMessages == 1)
    }

    @Test("a stream of Prepares at rising epochs keeps one prepared configuration above the commit")
    func streamOfPrepares() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let (forger, target) = (rack.ids[3], rack.ids[1])
        for epoch in 2...41 {
            rack.nodes[target]!.received(
                from: forger,
                message: try Self.prepare(epoch: Epoch(UInt64(epoch)), from: forger, to: target, rack: rack))
            rack.drain(target)
        }
        let state = rack.nodes[target]!.persistentState
        #expect(state.configurations.keys.sorted() == [1, 41])
        #expect(state.shares.keys.sorted() == [1, 41])
        #expect(state.latestCommittedEpoch == 1)
        // The committed epoch still loads.
        rack.inFlight.removeAll()
        #expect(try rack.load(target, 1) != nil)
    }

    @Test("the control plane out of epochs refuses clearly (TQ-CP-EPOCHS) instead of trapping")
    func controlPlaneOutOfEpochs() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        let committed = try #require(rack.nodes[rack.ids[0]]!.persistentState.latestCommittedConfiguration)
        let last = try Configuration(
            rackId: committed.rackId, epoch: Epoch(UInt64.max), coordinator: committed.coordinator,
            members: committed.members, threshold: committed.threshold, encryptedRackSecrets: nil)
        var controlPlane = ControlPlane(
            rackId: rack.rackId, resumingFrom: last, committedMembers: Set(rack.ids), highestEpoch: Epoch(UInt64.max))
        let error = #expect(throws: ControlPlaneError.self) {
            _ = try controlPlane.startReconfiguration(members: Set(rack.ids), available: Set(rack.ids))
        }
        #expect(error?.code == .epochsExhausted)
        #expect(!controlPlane.isReconfiguring)
    }
}
