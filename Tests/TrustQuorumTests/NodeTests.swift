import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

@Suite("Node")
struct NodeTests {
    @Test("initial setup by a trusted dealer: every member prepares, commits and loads one secret")
    func initialSetup() throws {
        var rack = Harness(count: 4)
        rack.connectAll()
        try rack.reconfigure(rack.ids[0], epoch: 1, last: nil, members: rack.ids)
        let status = try #require(rack.nodes[rack.ids[0]]!.coordinatorStatus)
        #expect(status.acked == [rack.ids[0]])
        #expect(status.configuration?.encryptedRackSecrets == nil)
        rack.deliverAll()
        let acked = try #require(rack.nodes[rack.ids[0]]!.coordinatorStatus).acked
        #expect(acked == Set(rack.ids))
        for id in rack.ids { #expect(rack.nodes[id]!.persistentState.hasPrepared(1)) }
        try rack.commitEverywhere(1, members: rack.ids)
        #expect(rack.nodes[rack.ids[0]]!.isCoordinating == false)
        let secrets = try rack.ids.map { try #require(try rack.load($0, 1)) }
        #expect(Set(secrets.map { $0.bytes.unsafeCopiedBytes }).count == 1)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("persist before send: the prepare is on disk when the ack goes out")
    func persistBeforeAck() throws {
        var rack = Harness(count: 3)
        rack.connectAll()
        try rack.reconfigure(rack.ids[0], epoch: 1, last: nil, members: rack.ids)
        let (from, to, prepare) = rack.inFlight.removeFirst()
        rack.nodes[to]!.received(from: from, message: prepare)
        let output = rack.nodes[to]!.drainOutput()
        #expect(output.persistentStateChanged)
        #expect(output.messages.map(\.message.kind) == [.prepareAck(1)])
        #expect(rack.nodes[to]!.persistentState.hasPrepared(1))
    }

    @Test("rotation: the coordinator collects validated shares, builds the chain, and older secrets stay readable")
    func rotation() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let first = try #require(try rack.load(rack.ids[1], 1))
        try rack.reconfigure(rack.ids[2], epoch: 2, last: 1, members: rack.ids)
        #expect(rack.nodes[rack.ids[2]]!.coordinatorStatus?.configuration == nil)  // collecting shares
        rack.deliverAll()
        let status = try #require(rack.nodes[rack.ids[2]]!.coordinatorStatus)
        #expect(status.configuration?.encryptedRackSecrets != nil)
        #expect(status.acked == Set(rack.ids))
        try rack.commitEverywhere(2, members: rack.ids)
        // Old shares are pruned on commit.
        for id in rack.ids { #expect(rack.nodes[id]!.persistentState.shares.keys.sorted() == [2]) }
        let second = try #require(try rack.load(rack.ids[4], 2))
        #expect(second != first)
        let viaChain = try #require(try rack.load(rack.ids[4], 1))
        #expect(viaChain == first)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a member that committed without preparing computes its share from K others")
    func prepareAndCommitComputesShare() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let late = rack.ids[4]
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll(dropping: [late])
        #expect(!rack.nodes[late]!.persistentState.hasPrepared(2))
        let config = try #require(rack.nodes[rack.ids[0]]!.persistentState.configurations[2])
        try rack.nodes[late]!.prepareAndCommit(config)
        rack.drain(late)
        #expect(rack.nodes[late]!.computingShareEpoch == 2)
        #expect(rack.nodes[late]!.persistentState.committedEpochs.contains(2))
        // Not yet: while computing the share, loading answers "not yet".
        #expect(try rack.nodes[late]!.loadRackSecret(2) == nil)
        rack.deliverAll()
        #expect(rack.nodes[late]!.computingShareEpoch == nil)
        let share = try #require(rack.nodes[late]!.persistentState.shares[2])
        #expect(config.validates(share, from: late))
        try rack.commitEverywhere(2, members: Array(rack.ids.dropLast()))
        let a = try #require(try rack.load(late, 2))
        let b = try #require(try rack.load(rack.ids[0], 2))
        #expect(a == b)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a node that asks for an old epoch is answered CommitAdvance, commits and computes its share")
    func commitAdvance() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let sleeper = rack.ids[3]
        // Two rotations without the sleeper (K + Z = 3 of 4 acked).
        for epoch: Epoch in [2, 3] {
            try rack.reconfigure(rack.ids[0], epoch: epoch, last: Epoch(epoch.value - 1), members: rack.ids)
            rack.deliverAll(dropping: [sleeper])
            try rack.commitEverywhere(epoch, members: Array(rack.ids.prefix(3)))
            rack.deliverAll(dropping: [sleeper])
        }
        #expect(rack.nodes[sleeper]!.persistentState.latestCommittedEpoch == 1)
        // The sleeper wakes up and loads its secret: it asks for epoch 1.
        #expect(try rack.nodes[sleeper]!.loadRackSecret(1) == nil)
        rack.drain(sleeper)
        rack.deliverAll()
        let kinds = rack.sent.filter { $0.to == sleeper }.map(\.message.kind)
        #expect(kinds.contains { if case .commitAdvance(let c) = $0 { return c.epoch == 3 } else { return false } })
        #expect(rack.nodes[sleeper]!.persistentState.latestCommittedEpoch == 3)
        #expect(rack.nodes[sleeper]!.persistentState.shares[3] != nil)
        let caughtUp = try #require(try rack.load(sleeper, 3))
        #expect(caughtUp == (try rack.load(rack.ids[0], 3)))
        // Epoch 1 is readable through the chain, one decryption.
        #expect(try rack.load(sleeper, 1) != nil)
        #expect(try rack.load(sleeper, 2) == (try rack.load(rack.ids[1], 2)))
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a removed node that asks for shares is expunged, records it and then ignores everything")
    func expunged() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let removed = rack.ids[4]
        let remaining = Array(rack.ids.prefix(4))
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: remaining)
        rack.deliverAll(dropping: [removed])
        try rack.commitEverywhere(2, members: remaining)
        rack.deliverAll(dropping: [removed])
        #expect(rack.nodes[removed]!.persistentState.expunged == nil)
        _ = try rack.nodes[removed]!.loadRackSecret(1)
        rack.drain(removed)
        rack.deliverAll()
        let state = rack.nodes[removed]!.persistentState
        #expect(state.expunged?.epoch == 2)
        #expect(state.shares.isEmpty)
        #expect(throws: LoadRackSecretError.self) { try rack.nodes[removed]!.loadRackSecret(1) }
        #expect(throws: CommitError(code: .expunged, epoch: 3)) { try rack.nodes[removed]!.commit(3) }
        // It answers nothing.
        rack.nodes[removed]!.received(from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .getShare(1)))
        rack.nodes[removed]!.connected(rack.ids[1])
        #expect(rack.nodes[removed]!.drainOutput().isEmpty)
        #expect(throws: ReconfigureError.self) {
            try rack.reconfigure(removed, epoch: 9, last: 2, members: rack.ids)
        }
    }

    @Test("a lying peer whose share does not match its digest is ignored")
    func lyingPeer() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let loader = rack.ids[0]
        _ = try rack.nodes[loader]!.loadRackSecret(1)
        rack.drain(loader)
        rack.inFlight.removeAll()
        let real = try #require(rack.nodes[rack.ids[1]]!.persistentState.shares[1])
        let forged = try Share(x: real.x, y: SecretBytes([UInt8](repeating: 7, count: 32)))
        rack.nodes[loader]!.received(from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .share(1, forged)))
        // A real share sent by the wrong peer is refused too.
        let other = try #require(rack.nodes[rack.ids[2]]!.persistentState.shares[1])
        rack.nodes[loader]!.received(from: rack.ids[3], message: Message(rackId: rack.rackId, kind: .share(1, other)))
        #expect(rack.nodes[loader]!.rejectedShares == 2)
        #expect(try rack.nodes[loader]!.loadRackSecret(1) == nil)  // the forgeries did not count
        rack.nodes[loader]!.received(from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .share(1, real)))
        rack.nodes[loader]!.received(from: rack.ids[2], message: Message(rackId: rack.rackId, kind: .share(1, other)))
        #expect(try rack.nodes[loader]!.loadRackSecret(1) != nil)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a coordinator rejects a forged share while collecting")
    func coordinatorRejectsForgedShare() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let coordinator = rack.ids[0]
        try rack.reconfigure(coordinator, epoch: 2, last: 1, members: rack.ids)
        rack.inFlight.removeAll()
        for peer in rack.ids.dropFirst() {
            let real = rack.nodes[peer]!.persistentState.shares[1]!
            let forged = try Share(x: real.x, y: SecretBytes([UInt8](repeating: 1, count: 32)))
            rack.nodes[coordinator]!.received(
                from: peer, message: Message(rackId: rack.rackId, kind: .share(1, forged)))
        }
        #expect(rack.nodes[coordinator]!.rejectedShares == 4)
        #expect(rack.nodes[coordinator]!.coordinatorStatus?.configuration == nil)
    }

    @Test("a Prepare for an older epoch is ignored, a newer one cancels stale coordination")
    func prepareOrdering() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let a = rack.ids[0]
        let b = rack.ids[1]
        try rack.reconfigure(a, epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll(dropping: [rack.ids[2]])
        let stalePrepares = rack.sent.filter {
            if case .prepare(let config, _, _) = $0.message.kind { return config.epoch == 2 } else { return false }
        }
        // b coordinates epoch 3 (the control plane gave up on 2).
        try rack.reconfigure(b, epoch: 3, last: 1, members: rack.ids)
        rack.deliverAll()
        #expect(rack.nodes[a]!.isCoordinating == false)  // cancelled by the newer Prepare
        #expect(rack.nodes[a]!.persistentState.hasPrepared(3))
        // A late Prepare for 2 to a node that never saw it but prepared 3 is ignored.
        #expect(rack.nodes[rack.ids[2]]!.persistentState.configurations[2] == nil)
        let late = try #require(stalePrepares.first { $0.to == rack.ids[2] })
        rack.nodes[rack.ids[2]]!.received(from: late.from, message: late.message)
        #expect(rack.nodes[rack.ids[2]]!.drainOutput().isEmpty)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a different configuration for a known epoch raises MismatchedConfigurations")
    func mismatchedConfigurations() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let config = try #require(rack.nodes[rack.ids[0]]!.persistentState.configurations[1])
        let forged = try Configuration(
            rackId: rack.rackId,
            epoch: 1,
            coordinator: config.coordinator,
            members: config.members,
            threshold: 2,
            encryptedRackSecrets: nil
        )
        let node = rack.ids[1]
        rack.nodes[node]!.received(
            from: rack.ids[0],
            message: Message(
                rackId: rack.rackId, kind: .commitAdvance(TestOperator.signed(forged, by: TestOperator.forger))))
        // Unsigned by the operator: refused and counted, no alarm (a peer cannot raise one).
        #expect(rack.nodes[node]!.drainOutput().alarms.isEmpty)
        #expect(rack.nodes[node]!.rejectedMessages == 1)
        // Signed (the operator signed two configurations for one epoch): the alarm.
        rack.nodes[node]!.received(
            from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .commitAdvance(TestOperator.signed(forged))))
        #expect(rack.nodes[node]!.drainOutput().alarms == [.mismatchedConfigurations(epoch: 1, from: rack.ids[0])])
        #expect(throws: CommitError(code: .mismatchedConfiguration, epoch: 1)) {
            try rack.nodes[node]!.prepareAndCommit(forged)
        }
    }

    @Test("Prepare is resent when a member connects, and a duplicate Prepare is re-acked")
    func resendOnConnect() throws {
        var rack = Harness(count: 3)
        let coordinator = rack.ids[0]
        try rack.reconfigure(coordinator, epoch: 1, last: nil, members: rack.ids)
        #expect(rack.inFlight.isEmpty)  // nobody connected yet
        rack.connect(coordinator, rack.ids[1])
        #expect(rack.inFlight.count == 1)
        rack.deliverAll()
        rack.connect(coordinator, rack.ids[1])  // acked: nothing to resend
        #expect(rack.inFlight.isEmpty)
        rack.connect(coordinator, rack.ids[2])
        let prepare = try #require(rack.inFlight.first)
        rack.deliverAll()
        rack.nodes[rack.ids[2]]!.received(from: prepare.from, message: prepare.message)
        #expect(rack.nodes[rack.ids[2]]!.drainOutput().messages.map(\.message.kind) == [.prepareAck(1)])
        #expect(rack.nodes[coordinator]!.coordinatorStatus?.acked == Set(rack.ids))
    }

    @Test("messages for another rack and LRTQ shares at a node never in LRTQ are dropped")
    func foreignAndLegacyMessagesDropped() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        var other = SeededRandomSource(seed: 99)
        let foreign = RackId.random(using: &other)
        let node = rack.ids[0]
        let share = rack.nodes[rack.ids[1]]!.persistentState.shares[1]!
        rack.nodes[node]!.received(from: rack.ids[1], message: Message(rackId: foreign, kind: .getShare(1)))
        rack.nodes[node]!.received(from: rack.ids[1], message: Message(rackId: foreign, kind: .getLrtqShare))
        rack.nodes[node]!.received(from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .lrtqShare(share)))
        #expect(rack.nodes[node]!.drainOutput().isEmpty)
        #expect(rack.nodes[node]!.rejectedShares == 0)
        rack.nodes[node]!.received(from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .getShare(1)))
        #expect(rack.nodes[node]!.drainOutput().messages.count == 1)
    }

    @Test("commit of an unprepared epoch is refused; commit of an old epoch is a no-op")
    func commitErrors() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        #expect(throws: CommitError(code: .notPrepared, epoch: 5)) { try rack.nodes[rack.ids[0]]!.commit(5) }
        try rack.nodes[rack.ids[0]]!.commit(1)
        #expect(rack.nodes[rack.ids[0]]!.drainOutput().isEmpty)
        let config = rack.nodes[rack.ids[0]]!.persistentState.configurations[1]!
        var outsider = Node(platformId: Harness.id(50), rackId: rack.rackId)
        #expect(throws: CommitError(code: .notMember, epoch: 1)) { try outsider.prepareAndCommit(config) }
        var otherRack = SeededRandomSource(seed: 5)
        var foreign = Node(platformId: rack.ids[0], rackId: RackId.random(using: &otherRack))
        #expect(throws: CommitError(code: .rackIdMismatch, epoch: 1)) { try foreign.prepareAndCommit(config) }
    }

    @Test("loadRackSecret errors: nothing committed, a future epoch, an epoch not in the chain")
    func loadErrors() throws {
        var fresh = Node(platformId: Harness.id(0), rackId: Harness(count: 3).rackId)
        #expect(throws: LoadRackSecretError(code: .noCommittedConfiguration, epoch: 1)) {
            try fresh.loadRackSecret(1)
        }
        var rack = Harness(count: 3)
        try rack.setUp()
        #expect(throws: LoadRackSecretError(code: .notCommitted, epoch: 2)) {
            try rack.nodes[rack.ids[0]]!.loadRackSecret(2)
        }
        _ = try rack.load(rack.ids[0], 1)
        #expect(throws: LoadRackSecretError(code: .unavailable, epoch: 0)) {
            try rack.nodes[rack.ids[0]]!.loadRackSecret(0)
        }
    }

    @Test("a restarted node keeps its persisted state and resumes computing a missing share")
    func restartResumesShareComputation() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let late = rack.ids[3]
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll(dropping: [late])
        try rack.commitEverywhere(2, members: Array(rack.ids.prefix(3)))
        let config = rack.nodes[rack.ids[0]]!.persistentState.configurations[2]!
        try rack.nodes[late]!.prepareAndCommit(config)
        rack.drain(late)
        rack.inFlight.removeAll()  // the GetShares are lost: the node crashes
        let persisted = rack.nodes[late]!.persistentState
        rack.nodes[late] = Node(platformId: late, rackId: rack.rackId, persistentState: persisted)
        #expect(rack.nodes[late]!.computingShareEpoch == 2)
        for peer in rack.ids.prefix(3) { rack.connect(late, peer) }
        rack.deliverAll()
        #expect(rack.nodes[late]!.persistentState.shares[2] != nil)
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a committed configuration missing from disk raises CommittedConfigurationLost")
    func committedConfigurationLost() {
        var state = PersistentState.empty
        state.committedEpochs = [4]
        var node = Node(platformId: Harness.id(0), rackId: Harness(count: 3).rackId, persistentState: state)
        #expect(node.drainOutput().alarms == [.committedConfigurationLost(epoch: 4)])
    }

    @Test("a coordinator whose chain does not decrypt raises RackSecretDecryptionFailed")
    func decryptionFailure() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        try rack.commitEverywhere(2, members: rack.ids)
        // Replace epoch 2's chain with garbage everywhere (disk corruption).
        for id in rack.ids {
            var state = rack.nodes[id]!.persistentState
            let config = state.configurations[2]!
            state.configurations[2] = try Configuration(
                rackId: config.rackId,
                epoch: 2,
                coordinator: config.coordinator,
                members: config.members,
                threshold: config.threshold,
                encryptedRackSecrets: EncryptedRackSecrets(
                    salt: [UInt8](repeating: 0, count: 32),
                    ciphertext: [UInt8](repeating: 1, count: 60)
                )
            )
            rack.nodes[id] = Node(platformId: id, rackId: rack.rackId, persistentState: state)
        }
        rack.connectAll()
        rack.deliverAll()
        _ = try rack.load(rack.ids[0], 2)
        #expect(throws: LoadRackSecretError(code: .failed, epoch: 1)) { try rack.nodes[rack.ids[0]]!.loadRackSecret(1) }
        rack.drain(rack.ids[0])
        #expect(rack.alarms[rack.ids[0]]!.contains(.rackSecretDecryptionFailed(epoch: 2)))
    }

    @Test("a configuration whose digest for us matches no share of the polynomial raises ShareComputationFailed")
    func shareComputationFailed() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let late = rack.ids[3]
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll(dropping: [late])
        try rack.commitEverywhere(2, members: Array(rack.ids.prefix(3)))
        let real = rack.nodes[rack.ids[0]]!.persistentState.configurations[2]!
        var digests = real.members
        digests[late] = ShareDigest(bytes: [UInt8](repeating: 0xAB, count: 32))!
        let forged = try Configuration(
            rackId: real.rackId,
            epoch: 2,
            coordinator: real.coordinator,
            members: digests,
            threshold: real.threshold,
            encryptedRackSecrets: real.encryptedRackSecrets
        )
        try rack.nodes[late]!.prepareAndCommit(forged)
        rack.drain(late)
        rack.deliverAll()
        #expect(rack.alarms[late]!.contains { $0.name == "ShareComputationFailed" })
        #expect(rack.nodes[late]!.persistentState.shares[2] == nil)
        #expect(rack.nodes[late]!.computingShareEpoch == nil)
    }

    @Test("validated shares that cannot be combined raise RackSecretReconstructionFailed")
    func reconstructionFailed() throws {
        let ids = (0..<3).map { Harness.id($0) }
        let rackId = Harness(count: 3).rackId
        let mine = try Share(x: 1, y: SecretBytes([UInt8](repeating: 1, count: 32)))
        let short = try Share(x: 2, y: SecretBytes([UInt8](repeating: 2, count: 16)))
        let third = try Share(x: 3, y: SecretBytes([UInt8](repeating: 3, count: 32)))
        let config = try Configuration(
            rackId: rackId,
            epoch: 1,
            coordinator: ids[0],
            members: [ids[0]: mine.digest, ids[1]: short.digest, ids[2]: third.digest],
            threshold: 2,
            encryptedRackSecrets: nil
        )
        let state = PersistentState(
            lrtq: nil,
            configurations: [1: config],
            shares: [1: mine],
            committedEpochs: [1],
            expunged: nil
        )
        var node = Node(platformId: ids[0], rackId: rackId, persistentState: state)
        #expect(try node.loadRackSecret(1) == nil)
        node.received(from: ids[1], message: Message(rackId: rackId, kind: .share(1, short)))
        let alarms = node.drainOutput().alarms
        #expect(alarms.count == 1 && alarms.first?.name == "RackSecretReconstructionFailed")
    }

    @Test("a Prepare from someone other than its coordinator, or with a share that is not ours, is ignored")
    func badPrepares() throws {
        var rack = Harness(count: 4)
        rack.connectAll()
        try rack.reconfigure(rack.ids[0], epoch: 1, last: nil, members: rack.ids)
        let prepares = rack.inFlight
        rack.inFlight.removeAll()
        let toOne = try #require(prepares.first { $0.to == rack.ids[1] })
        let toTwo = try #require(prepares.first { $0.to == rack.ids[2] })
        // Relayed by a non-coordinator: refused for its ticket, counted, nothing persisted or sent.
        rack.nodes[rack.ids[1]]!.received(from: rack.ids[3], message: toOne.message)
        let relayed = rack.nodes[rack.ids[1]]!.drainOutput()
        #expect(relayed.messages.isEmpty && !relayed.persistentStateChanged)
        #expect(relayed.refusals.map(\.from) == [rack.ids[3]])
        #expect(rack.nodes[rack.ids[1]]!.rejectedMessages == 1)
        // Node 2's share handed to node 1.
        rack.nodes[rack.ids[1]]!.received(from: rack.ids[0], message: toTwo.message)
        #expect(rack.nodes[rack.ids[1]]!.drainOutput().isEmpty)
        #expect(rack.nodes[rack.ids[1]]!.rejectedShares == 1)
        rack.nodes[rack.ids[1]]!.received(from: rack.ids[0], message: toOne.message)
        #expect(rack.nodes[rack.ids[1]]!.drainOutput().messages.map(\.message.kind) == [.prepareAck(1)])
    }

    @Test("GetShare: a non-member of the latest epoch is expunged; an unknown epoch is ignored")
    func getShareAnswers() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let node = rack.ids[0]
        let stranger = Harness.id(77)
        rack.nodes[node]!.received(from: stranger, message: Message(rackId: rack.rackId, kind: .getShare(1)))
        let latest = try #require(rack.nodes[node]!.persistentState.latestCommittedConfiguration)
        #expect(
            rack.nodes[node]!.drainOutput().messages.map(\.message.kind) == [.expunged(TestOperator.signed(latest))])
        rack.nodes[node]!.received(from: rack.ids[1], message: Message(rackId: rack.rackId, kind: .getShare(9)))
        #expect(rack.nodes[node]!.drainOutput().isEmpty)
    }

    @Test("CommitAdvance that does not list us, and Expunged for a past epoch, are ignored")
    func ignoredAdvances() throws {
        var rack = Harness(count: 5)
        try rack.setUp()
        let without = Array(rack.ids.prefix(4))
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: without)
        rack.deliverAll(dropping: [rack.ids[4]])
        let config = rack.nodes[rack.ids[0]]!.persistentState.configurations[2]!
        rack.nodes[rack.ids[4]]!.received(
            from: rack.ids[0],
            message: Message(rackId: rack.rackId, kind: .commitAdvance(TestOperator.signed(config)))
        )
        #expect(rack.nodes[rack.ids[4]]!.drainOutput().isEmpty)
        #expect(rack.nodes[rack.ids[4]]!.persistentState.latestCommittedEpoch == 1)
        let past = TestOperator.exclusion(
            rack: rack.rackId, epoch: 1, members: [rack.ids[0], rack.ids[2], rack.ids[3]])
        rack.nodes[rack.ids[1]]!.received(
            from: rack.ids[0], message: Message(rackId: rack.rackId, kind: .expunged(past)))
        #expect(rack.nodes[rack.ids[1]]!.persistentState.expunged == nil)
    }

    @Test("the coordinator stops coordinating when its epoch is committed")
    func coordinatorCommit() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        try rack.reconfigure(rack.ids[1], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        #expect(rack.nodes[rack.ids[1]]!.isCoordinating)
        try rack.nodes[rack.ids[1]]!.commit(2)
        #expect(!rack.nodes[rack.ids[1]]!.isCoordinating)
        #expect(rack.nodes[rack.ids[1]]!.coordinatorStatus == nil)
    }

    @Test("a ticket is not a commit: a coordinator whose commit was lost refuses, and coordinates once committed")
    func ticketIsNotACommit() throws {
        var rack = Harness(count: 3)
        rack.connectAll()
        try rack.reconfigure(rack.ids[0], epoch: 1, last: nil, members: rack.ids)
        rack.deliverAll()
        // The control plane committed epoch 1 but node 2 never got the message.
        try rack.nodes[rack.ids[0]]!.commit(1)
        try rack.nodes[rack.ids[1]]!.commit(1)
        #expect(rack.nodes[rack.ids[2]]!.persistentState.latestCommittedEpoch == nil)
        #expect(throws: ReconfigureError.self) {
            try rack.reconfigure(rack.ids[2], epoch: 2, last: 1, members: rack.ids)
        }
        #expect(rack.nodes[rack.ids[2]]!.persistentState.latestCommittedEpoch == nil)
        #expect(!rack.nodes[rack.ids[2]]!.isCoordinating)
        try rack.nodes[rack.ids[2]]!.commit(1)
        try rack.reconfigure(rack.ids[2], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll()
        #expect(rack.nodes[rack.ids[2]]!.coordinatorStatus?.acked == Set(rack.ids))
    }

    @Test("a late Prepare gives a member computing its share the share directly")
    func latePrepareCompletesComputation() throws {
        var rack = Harness(count: 4)
        try rack.setUp()
        let late = rack.ids[3]
        try rack.reconfigure(rack.ids[0], epoch: 2, last: 1, members: rack.ids)
        rack.deliverAll(dropping: [late])
        let prepare = try #require(
            rack.sent.first {
                if case .prepare(let config, _, _) = $0.message.kind { return $0.to == late && config.epoch == 2 }
                return false
            }
        )
        let config = rack.nodes[rack.ids[0]]!.persistentState.configurations[2]!
        try rack.nodes[late]!.prepareAndCommit(config)
        _ = rack.nodes[late]!.drainOutput()  // its GetShares are lost
        #expect(rack.nodes[late]!.computingShareEpoch == 2)
        rack.nodes[late]!.received(from: prepare.from, message: prepare.message)
        let output = rack.nodes[late]!.drainOutput()
        #expect(output.persistentStateChanged)
        #expect(output.messages.map(\.message.kind) == [.prepareAck(2)])
        #expect(rack.nodes[late]!.computingShareEpoch == nil)
        #expect(rack.nodes[late]!.persistentState.hasPrepared(2))
    }

    @Test("descriptions never contain secret bytes")
    func redaction() throws {
        var rack = Harness(count: 3)
        try rack.setUp()
        let secret = try #require(try rack.load(rack.ids[0], 1))
        let share = rack.nodes[rack.ids[0]]!.persistentState.shares[1]!
        let hex = secret.bytes.unsafeCopiedBytes.hexString
        let shareHex = share.y.unsafeCopiedBytes.hexString
        let texts = [
            "\(secret)", "\(share)", "\(Message(rackId: rack.rackId, kind: .share(1, share)))",
            "\(DiskKey(secret: secret, epoch: 1, rackId: rack.rackId, platform: rack.ids[0], diskId: [1]))",
        ]
        for text in texts {
            #expect(!text.contains(hex) && !text.contains(shareHex))
        }
    }
}
