import KeyrackCore
import SecretSharing
import Testing
import TrustQuorum

@testable import Simulation

/// Each invariant, fed a state that breaks it, is caught — so the checker is
/// known to be able to fail — and a healthy state passes.
@Suite("InvariantChecker")
struct InvariantCheckerTests {
    static let rack = RackId(bytes: Array(0..<16))!
    static let ids = (0..<5).map { PlatformId(part: "913", serial: "S\(100 + $0)") }

    static func config(_ epoch: Epoch, members: [PlatformId] = Array(ids.prefix(4)), threshold: Int = 3)
        -> Configuration
    {
        var digests: [PlatformId: ShareDigest] = [:]
        for id in members { digests[id] = ShareDigest(bytes: [UInt8](repeating: UInt8(epoch.value), count: 32))! }
        return try! Configuration(
            rackId: rack,
            epoch: epoch,
            coordinator: members[0],
            members: digests,
            threshold: threshold,
            encryptedRackSecrets: nil
        )
    }

    static let share = try! Share(x: 1, y: SecretBytes([UInt8](repeating: 5, count: 32)))

    /// A node that prepared and committed `config`.
    static func committed(_ id: PlatformId, _ config: Configuration) -> PersistentState {
        var state = PersistentState.empty
        state.configurations[config.epoch] = config
        state.shares[config.epoch] = share
        state.committedEpochs = [config.epoch]
        return state
    }

    static var healthy: [NodeView] {
        let config = config(1)
        return ids.prefix(4).map { NodeView(id: $0, state: committed($0, config)) }
    }

    static func invariants(
        _ nodes: [NodeView],
        _ cp: ControlPlaneView = ControlPlaneView(
            lastCommitted: nil,
            committedMembers: []
        )
    ) -> [Invariant] {
        InvariantChecker.check(nodes: nodes, controlPlane: cp).map(\.invariant)
    }

    @Test("a healthy cluster passes")
    func healthy() {
        #expect(
            Self.invariants(
                Self.healthy, ControlPlaneView(lastCommitted: Self.config(1), committedMembers: Set(Self.ids.prefix(4)))
            ).isEmpty)
    }

    @Test("caught: two nodes hold different configurations for one epoch")
    func configurationsAgree() {
        var nodes = Self.healthy
        nodes[2].state.configurations[1] = Self.config(1, threshold: 2)
        #expect(Self.invariants(nodes) == [.configurationsAgree])
    }

    @Test("caught: the coordinator counts as acked a node that has not prepared")
    func ackedNodesPrepared() {
        var nodes = Self.healthy
        let next = Self.config(2)
        nodes[0].state.configurations[2] = next
        nodes[0].state.shares[2] = Self.share
        nodes[1].state.configurations[2] = next
        nodes[1].state.shares[2] = Self.share
        nodes[0].coordinatorStatus = CoordinatorStatus(
            epoch: 2, configuration: next, acked: [Self.ids[0], Self.ids[1]])
        nodes[0].isCoordinating = true
        #expect(Self.invariants(nodes).isEmpty)
        nodes[0].coordinatorStatus = CoordinatorStatus(
            epoch: 2,
            configuration: next,
            acked: [Self.ids[0], Self.ids[1], Self.ids[3]]
        )
        #expect(Self.invariants(nodes) == [.ackedNodesPrepared])
    }

    @Test("caught: the control plane counts as committed a node that has not committed")
    func committedNodesCommitted() {
        let nodes = Self.healthy
        let cp = ControlPlaneView(lastCommitted: Self.config(2), committedMembers: [Self.ids[1]])
        #expect(Self.invariants(nodes, cp) == [.committedNodesCommitted])
    }

    @Test("caught: a node coordinates and computes a share at once")
    func coordinateXorCompute() {
        var nodes = Self.healthy
        nodes[3].isCoordinating = true
        #expect(Self.invariants(nodes).isEmpty)
        nodes[3].computingShareEpoch = 1
        #expect(Self.invariants(nodes) == [.coordinateXorCompute])
    }

    @Test("caught: an alarm was raised")
    func noAlarms() {
        var nodes = Self.healthy
        nodes[1].alarms = [.rackSecretDecryptionFailed(epoch: 1)]
        #expect(Self.invariants(nodes) == [.noAlarms])
    }

    @Test("caught: a removed node committed a configuration without it and does not know it is expunged")
    func expungedKnowsOrListed() {
        var nodes = Self.healthy
        let without = Self.config(2, members: [Self.ids[0], Self.ids[1], Self.ids[2]], threshold: 2)
        var state = PersistentState.empty
        state.configurations[2] = without
        state.committedEpochs = [1, 2]
        nodes[3].state = state
        #expect(Self.invariants(nodes) == [.expungedKnowsOrListed])
        nodes[3].state.expunged = ExpungedMetadata(epoch: 2, from: Self.ids[0])
        #expect(Self.invariants(nodes).isEmpty)
    }

    @Test("caught: an expunged node holds a share of an epoch it is not a member of")
    func noShareOutsideMembership() {
        var nodes = Self.healthy
        let without = Self.config(2, members: [Self.ids[0], Self.ids[1], Self.ids[2]], threshold: 2)
        nodes[3].state.expunged = ExpungedMetadata(epoch: 2, from: Self.ids[0])
        nodes[3].state.configurations[2] = without
        nodes[3].state.shares[2] = Self.share
        #expect(Self.invariants(nodes) == [.noShareOutsideMembership])
    }

    @Test("caught: two nodes loaded different secrets for one epoch")
    func rackSecretsAgree() {
        let a = RackSecret(SecretBytes([UInt8](repeating: 1, count: 32)))!
        let b = RackSecret(SecretBytes([UInt8](repeating: 2, count: 32)))!
        #expect(InvariantChecker.checkLoadedSecret(a, epoch: 1, node: Self.ids[0], firstLoaded: nil) == nil)
        #expect(InvariantChecker.checkLoadedSecret(a, epoch: 1, node: Self.ids[0], firstLoaded: a) == nil)
        #expect(
            InvariantChecker.checkLoadedSecret(b, epoch: 1, node: Self.ids[1], firstLoaded: a)?.invariant
                == .rackSecretsAgree
        )
    }

    @Test("caught: a message that does not survive the wire format")
    func wireFormat() throws {
        let good = Message(rackId: Self.rack, kind: .getShare(3))
        #expect((try? InvariantChecker.checkWireRoundTrip(good).get()) == good)
        let long = try Share(x: 1, y: SecretBytes([UInt8](repeating: 1, count: 70_000)))
        let bad = Message(rackId: Self.rack, kind: .share(1, long))
        guard case .failure(let violation) = InvariantChecker.checkWireRoundTrip(bad) else {
            Issue.record("an oversize share was not caught")
            return
        }
        #expect(violation.invariant == .wireFormat)
    }

    @Test("caught: liveness fails while a member has not committed or loaded the last configuration")
    func liveness() {
        let simulator = Simulator(options: SimulationOptions(nodes: 4, seed: 1, events: 0, faults: []))
        #expect(simulator.unsettled() != nil)  // nothing committed
        simulator.settle(after: .rotate)
        #expect(simulator.unsettled()?.contains("has not loaded") == true)
        simulator.apply(.crash(node: 3))
        simulator.settle(after: .rotate)
        #expect(simulator.unsettled()?.contains("has not committed") == true)
        let report = simulator.finish()
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
    }
}
