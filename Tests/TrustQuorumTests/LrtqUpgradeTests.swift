import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

@Suite("LRTQ upgrade")
struct LrtqUpgradeTests {
    /// Upgrades a connected LRTQ rack at `epoch` through `coordinator` and
    /// commits it everywhere.
    static func upgradeAndCommit(_ rack: inout Harness, coordinator: PlatformId, epoch: Epoch) throws {
        try rack.upgrade(coordinator, epoch: epoch)
        rack.deliverAll()
        let status = try #require(rack.nodes[coordinator]!.coordinatorStatus)
        #expect(status.acked == Set(rack.ids))
        try rack.commitEverywhere(epoch, members: rack.ids)
        rack.deliverAll()
    }

    @Test("the upgrade collects K LRTQ shares, puts the LRTQ secret in the chain as epoch 1, prepares and commits")
    func upgrade() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq()
        let coordinator = rack.ids[2]
        try rack.upgrade(coordinator, epoch: 2)
        #expect(
            rack.nodes[coordinator]!.coordinatorStatus == CoordinatorStatus(epoch: 2, configuration: nil, acked: []))
        #expect(rack.warnings[coordinator]?.last == .lrtqDeprecated(.upgrading))
        #expect(rack.sent.filter { $0.message.kind == .getLrtqShare }.count == 4)
        rack.deliverAll()
        let config = try #require(rack.nodes[coordinator]!.coordinatorStatus?.configuration)
        #expect(config.epoch == 2)
        #expect(config.encryptedRackSecrets != nil)
        try rack.commitEverywhere(2, members: rack.ids)
        rack.deliverAll()
        for id in rack.ids {
            #expect(!rack.nodes[id]!.isInLrtq)
            #expect(rack.nodes[id]!.persistentState.lrtq == nil)
            #expect(rack.nodes[id]!.persistentState.latestCommittedEpoch == 2)
        }
        let latest = try rack.load(rack.ids[0], 2)
        #expect(latest != nil)
        for id in rack.ids {
            #expect(try rack.load(id, 2) == latest)
            #expect(try rack.load(id, 1) == secret)
        }
        #expect(rack.allAlarms.isEmpty)
        // The chain opens to exactly epoch 1 → the LRTQ secret.
        let opened = try RackSecretChain.open(
            config.encryptedRackSecrets!, with: latest!, rackId: rack.rackId, epoch: 2)
        #expect(opened == [1: secret])

        // Afterwards the rack reconfigures normally, and epoch 1 stays readable.
        try rack.reconfigure(rack.ids[4], epoch: 3, last: 2, members: rack.ids)
        rack.deliverAll()
        try rack.commitEverywhere(3, members: rack.ids)
        rack.deliverAll()
        for id in rack.ids { #expect(try rack.load(id, 1) == secret) }
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("mixed mode: prepared nodes still answer LRTQ requests; committed ones answer CommitAdvance or Expunged")
    func mixedMode() throws {
        var rack = Harness(count: 4)
        _ = try rack.setUpLrtq()
        try rack.upgrade(rack.ids[0], epoch: 2)
        rack.deliverAll()
        let prepared = rack.ids[1]
        #expect(rack.nodes[prepared]!.persistentState.hasPrepared(2))
        rack.nodes[prepared]!.received(from: rack.ids[3], message: Message(rackId: rack.rackId, kind: .getLrtqShare))
        let answer = rack.nodes[prepared]!.drainOutput().messages.map(\.message.kind)
        #expect(answer == [.lrtqShare(rack.nodes[prepared]!.persistentState.lrtq!.share)])

        try rack.nodes[prepared]!.commit(2)
        _ = rack.nodes[prepared]!.drainOutput()
        #expect(rack.nodes[prepared]!.persistentState.lrtq == nil)
        let config = rack.nodes[prepared]!.persistentState.configurations[2]!
        rack.nodes[prepared]!.received(from: rack.ids[3], message: Message(rackId: rack.rackId, kind: .getLrtqShare))
        #expect(
            rack.nodes[prepared]!.drainOutput().messages.map(\.message.kind) == [
                .commitAdvance(TestOperator.signed(config))
            ])
        rack.nodes[prepared]!.received(from: Harness.id(20), message: Message(rackId: rack.rackId, kind: .getLrtqShare))
        #expect(
            rack.nodes[prepared]!.drainOutput().messages.map(\.message.kind) == [.expunged(TestOperator.signed(config))]
        )
        // An LRTQ share arriving after the commit is ignored.
        let stray = rack.nodes[rack.ids[3]]!.persistentState.lrtq!.share
        rack.nodes[prepared]!.received(
            from: rack.ids[3], message: Message(rackId: rack.rackId, kind: .lrtqShare(stray)))
        #expect(rack.nodes[prepared]!.drainOutput().isEmpty)
        #expect(rack.nodes[prepared]!.rejectedShares == 0)
    }

    @Test("a coordinator that crashes while collecting LRTQ shares: the retry at the next epoch completes")
    func coordinatorCrashesDuringCollection() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq()
        var controlPlane = ControlPlane(rackId: rack.rackId, startingInLrtq: true)
        let first = try #require(
            try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids), available: Set(rack.ids))
        )
        guard case .upgradeFromLrtq(let coordinator, let request) = first else {
            Issue.record("expected an upgrade, got \(first)")
            return
        }
        #expect(request.epoch == 2)
        try rack.nodes[coordinator]!.upgradeFromLrtq(request, using: &rack.random)
        rack.drain(coordinator)
        // One answer arrives, then the coordinator crashes: the rest are lost.
        rack.deliverAll(limit: 2)
        rack.inFlight.removeAll()
        rack.restart(coordinator)
        #expect(rack.nodes[coordinator]!.persistentState.configurations.isEmpty)
        #expect(!rack.nodes[coordinator]!.isCoordinating)
        #expect(rack.nodes[coordinator]!.isInLrtq)

        // The control plane notices and retries at epoch 3 with another coordinator.
        let available = Set(rack.ids).subtracting([coordinator])
        let retry = controlPlane.tick(available: available)
        guard case .upgradeFromLrtq(let second, let secondRequest) = try #require(retry.first) else {
            Issue.record("expected an upgrade retry, got \(retry)")
            return
        }
        #expect(second != coordinator)
        #expect(secondRequest.epoch == 3)
        rack.connectAll()
        rack.inFlight.removeAll()
        try rack.nodes[second]!.upgradeFromLrtq(secondRequest, using: &rack.random)
        rack.drain(second)
        rack.deliverAll()
        let status = try #require(rack.nodes[second]!.coordinatorStatus)
        #expect(status.acked == Set(rack.ids))
        #expect(controlPlane.coordinatorReported(status, from: second, available: Set(rack.ids)).count == 5)
        #expect(!controlPlane.inLrtq)
        try rack.commitEverywhere(3, members: rack.ids)
        rack.deliverAll()
        for id in rack.ids { #expect(try rack.load(id, 1) == secret) }
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a node down during the upgrade comes back after the commit and recomputes its share")
    func nodeDownDuringUpgrade() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq()
        let sleeper = rack.ids[4]
        let awake = Array(rack.ids.prefix(4))
        for id in awake { rack.nodes[id]!.disconnected(sleeper) }
        try rack.upgrade(rack.ids[0], epoch: 2)
        rack.deliverAll(dropping: [sleeper])
        let status = try #require(rack.nodes[rack.ids[0]]!.coordinatorStatus)
        // K + Z = 3 + 1 of 5 acked: enough to commit.
        #expect(status.acked == Set(awake))
        try rack.commitEverywhere(2, members: awake)
        rack.deliverAll(dropping: [sleeper])
        #expect(rack.nodes[sleeper]!.isInLrtq)

        // It comes back in LRTQ, tries to unlock the old way, and is pointed at epoch 2.
        rack.restart(sleeper)
        for id in awake {
            rack.connect(sleeper, id)
            rack.connect(id, sleeper)
        }
        _ = try rack.nodes[sleeper]!.loadRackSecret(1)
        rack.drain(sleeper)
        rack.deliverAll()
        #expect(rack.nodes[sleeper]!.persistentState.latestCommittedEpoch == 2)
        #expect(rack.nodes[sleeper]!.persistentState.lrtq == nil)
        let config = rack.nodes[sleeper]!.persistentState.configurations[2]!
        let share = try #require(rack.nodes[sleeper]!.persistentState.shares[2])
        #expect(config.validates(share, from: sleeper))
        #expect(try rack.load(sleeper, 1) == secret)
        #expect(try rack.load(sleeper, 2) == rack.load(rack.ids[0], 2))
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a node presenting an LRTQ share whose digest is unknown is rejected; the upgrade completes without it")
    func unknownDigest() throws {
        var rack = Harness(count: 5)
        let secret = try rack.setUpLrtq(connect: false)
        let coordinator = rack.ids[0]
        try rack.upgrade(coordinator, epoch: 2)
        rack.inFlight.removeAll()
        func deliver(_ from: PlatformId, _ share: Share) {
            rack.nodes[coordinator]!.received(
                from: from, message: Message(rackId: rack.rackId, kind: .lrtqShare(share)))
            rack.drain(coordinator)
        }
        deliver(rack.ids[1], forgedShare)
        #expect(rack.nodes[coordinator]!.rejectedShares == 1)
        // A second node replaying ids[2]'s genuine share is a duplicate.
        let genuine = rack.nodes[rack.ids[2]]!.persistentState.lrtq!.share
        deliver(rack.ids[2], genuine)
        deliver(rack.ids[3], genuine)
        #expect(rack.nodes[coordinator]!.rejectedShares == 2)
        #expect(rack.nodes[coordinator]!.coordinatorStatus?.configuration == nil)
        deliver(rack.ids[4], rack.nodes[rack.ids[4]]!.persistentState.lrtq!.share)
        let config = try #require(rack.nodes[coordinator]!.coordinatorStatus?.configuration)
        rack.connectAll()
        rack.deliverAll()
        try rack.commitEverywhere(2, members: rack.ids)
        rack.deliverAll()
        #expect(config.epoch == 2)
        for id in rack.ids { #expect(try rack.load(id, 1) == secret) }
        #expect(rack.allAlarms.isEmpty)
    }

    @Test("a second upgrade request after the first committed is refused, by the node and by the control plane")
    func secondUpgrade() throws {
        var rack = Harness(count: 4)
        _ = try rack.setUpLrtq()
        var controlPlane = ControlPlane(rackId: rack.rackId, startingInLrtq: true)
        let action = try #require(
            try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids), available: Set(rack.ids))
        )
        #expect(throws: ControlPlaneError.self) {
            try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids), available: Set(rack.ids))
        }
        guard case .upgradeFromLrtq(let coordinator, let request) = action else {
            Issue.record("expected an upgrade, got \(action)")
            return
        }
        try rack.nodes[coordinator]!.upgradeFromLrtq(request, using: &rack.random)
        rack.drain(coordinator)
        rack.deliverAll()
        let status = try #require(rack.nodes[coordinator]!.coordinatorStatus)
        #expect(!controlPlane.coordinatorReported(status, from: coordinator, available: Set(rack.ids)).isEmpty)
        try rack.commitEverywhere(2, members: rack.ids)
        rack.deliverAll()

        do {
            _ = try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids), available: Set(rack.ids))
            Issue.record("the control plane accepted a second upgrade")
        } catch {
            #expect(error.code == .notInLrtq)
        }
        for id in rack.ids {
            #expect(throws: ReconfigureError.self) { try rack.upgrade(id, epoch: 5) }
            do {
                try rack.upgrade(id, epoch: 6)
            } catch {
                #expect(error.code == .alreadyUpgraded)
            }
            #expect(rack.nodes[id]!.persistentState.lrtq == nil)
        }
        // A normal reconfiguration is what follows.
        for id in rack.ids { controlPlane.commitConfirmed(by: id, epoch: 2) }
        #expect(try controlPlane.startReconfiguration(members: Set(rack.ids), available: Set(rack.ids)) != nil)
    }

    @Test("LRTQ refuses what it is not: a fresh setup on an LRTQ node, a reconfiguration before the upgrade")
    func nothingButTheUpgrade() throws {
        var rack = Harness(count: 4)
        _ = try rack.setUpLrtq()
        do {
            try rack.reconfigure(rack.ids[0], epoch: 2, last: nil, members: rack.ids)
            Issue.record("a fresh setup replaced LRTQ")
        } catch {
            #expect(error.code == .lastCommittedEpochMismatch)
        }
        var controlPlane = ControlPlane(rackId: rack.rackId, startingInLrtq: true)
        #expect(controlPlane.inLrtq)
        do {
            _ = try controlPlane.startReconfiguration(members: Set(rack.ids), available: Set(rack.ids))
            Issue.record("a reconfiguration started in LRTQ")
        } catch {
            #expect(error.code == .lrtqRequiresUpgrade)
        }
        var plain = ControlPlane(rackId: rack.rackId)
        do {
            _ = try plain.startUpgradeFromLrtq(members: Set(rack.ids), available: Set(rack.ids))
            Issue.record("a rack that never was in LRTQ was upgraded")
        } catch {
            #expect(error.code == .notInLrtq)
        }
        do {
            _ = try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids.prefix(2)), available: Set(rack.ids))
            Issue.record("an upgrade to 2 members started")
        } catch {
            #expect(error.code == .invalidMembership)
        }
        // With nobody available the control plane waits, then retries on a tick.
        #expect(try controlPlane.startUpgradeFromLrtq(members: Set(rack.ids), available: []) == nil)
        let actions = controlPlane.tick(available: Set(rack.ids))
        guard case .upgradeFromLrtq(_, let request) = try #require(actions.first) else {
            Issue.record("expected an upgrade, got \(actions)")
            return
        }
        #expect(request.epoch == 2)
        #expect("\(actions[0])".hasPrefix("upgradeFromLrtq(epoch: 2"))
    }

    @Test("LRTQ shares that match their digests but cannot be combined raise RackSecretReconstructionFailed")
    func reconstructionFails() throws {
        var rack = Harness(count: 3)
        _ = try rack.setUpLrtq(connect: false)
        let node = rack.ids[0]
        // A corrupted digest set admits a 16-byte share at x = 2.
        let short = try Share(x: 2, y: SecretBytes([UInt8](repeating: 9, count: 16)))
        var state = rack.nodes[node]!.persistentState
        state.lrtq!.shareDigests[1] = short.digest
        let message = Message(rackId: rack.rackId, kind: .lrtqShare(short))

        rack.nodes[node] = Node(platformId: node, rackId: rack.rackId, persistentState: state)
        #expect(try rack.nodes[node]!.loadRackSecret(1) == nil)
        rack.nodes[node]!.received(from: rack.ids[1], message: message)
        #expect(
            rack.nodes[node]!.drainOutput().alarms.map(\.name) == ["RackSecretReconstructionFailed"]
        )
        #expect(rack.nodes[node]!.rejectedShares == 0)

        rack.nodes[node] = Node(platformId: node, rackId: rack.rackId, persistentState: state)
        try rack.upgrade(node, epoch: 2)
        #expect(rack.nodes[node]!.isCoordinating)
        rack.nodes[node]!.received(from: rack.ids[1], message: message)
        #expect(
            rack.nodes[node]!.drainOutput().alarms.map(\.name) == ["RackSecretReconstructionFailed"]
        )
        #expect(!rack.nodes[node]!.isCoordinating)
        #expect(rack.nodes[node]!.persistentState.configurations.isEmpty)
    }

    @Test("a refused upgrade is retried at the next epoch with another coordinator")
    func refusedUpgrade() throws {
        let rack = RackId(bytes: Array(0..<16))!
        let ids = (0..<4).map { PlatformId(part: "913", serial: "S\($0)") }
        var controlPlane = ControlPlane(rackId: rack, startingInLrtq: true)
        let first = try #require(try controlPlane.startUpgradeFromLrtq(members: Set(ids), available: Set(ids)))
        let refused = controlPlane.reconfigurationRefused(by: first.target, available: Set(ids))
        let retry = try #require(refused)
        guard case .upgradeFromLrtq(let coordinator, let request) = retry else {
            Issue.record("expected an upgrade, got \(retry)")
            return
        }
        #expect(coordinator != first.target)
        #expect(request.epoch == 3)
    }
}
