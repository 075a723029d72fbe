import Foundation
import KeyrackCore
import SecretSharing
import Testing
import TrustQuorum

@testable import Simulation

@Suite("Simulator, starting in LRTQ")
struct LrtqSimulationTests {
    static func run(_ options: SimulationOptions) -> (SimulationReport, Simulator) {
        let simulator = Simulator(options: options)
        simulator.apply(.rotate)
        while simulator.log.count < options.events && simulator.violations.isEmpty {
            simulator.apply(simulator.nextEvent())
        }
        return (simulator.finish(), simulator)
    }

    @Test(
        "LRTQ runs upgrade, keep every invariant, are live, and read the LRTQ secret as epoch 1 everywhere",
        arguments: [(3, UInt64(1)), (4, 2), (5, 3), (7, 4), (9, 5)]
    )
    func lrtqRuns(nodes: Int, seed: UInt64) {
        let (report, simulator) = Self.run(
            SimulationOptions(nodes: nodes, seed: seed, events: 4000, faults: .all, startInLrtq: true)
        )
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        #expect(report.lrtqSecretReadable == true)
        #expect(report.alarms == 0)
        #expect(report.warnings > 0)
        #expect(report.epochsCommitted >= 1)
        #expect(!simulator.controlPlane.inLrtq)
        #expect(simulator.log.contains(.upgradeFromLrtq))
    }

    @Test("a random LRTQ run unlocks epoch 1 under LRTQ before it upgrades")
    func lrtqActivity() throws {
        let options = SimulationOptions(nodes: 4, seed: 21, events: 6000, faults: [], startInLrtq: true)
        let (report, simulator) = Self.run(options)
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        let upgradeIndex = try #require(simulator.log.firstIndex(of: .upgradeFromLrtq))
        #expect(
            simulator.log[..<upgradeIndex].contains {
                if case .loadSecret(_, 1) = $0 { return true } else { return false }
            }
        )
    }

    @Test("a node added under LRTQ gets a spare share, unlocks, and is a member after the upgrade")
    func addUnderLrtq() {
        let simulator = Simulator(
            options: SimulationOptions(nodes: 4, seed: 2, events: 0, faults: [], startInLrtq: true)
        )
        // The donor first rebuilds the LRTQ secret; the operator tries again.
        simulator.settle(after: .addNode(node: 4))
        #expect(simulator.nodes[4].persisted.lrtq == nil)
        simulator.settle(after: .addNode(node: 4))
        let package = simulator.nodes[4].persisted.lrtq
        #expect(package != nil)
        #expect(package?.spareShares.isEmpty == true)
        #expect(simulator.nodes[0].persisted.lrtq?.spareShares.count == 62)
        #expect(simulator.lrtqNodesAdded == 1)
        simulator.settle(after: .loadSecret(node: 4, epoch: 1))
        simulator.settle(after: .upgradeFromLrtq)
        #expect(simulator.controlPlane.lastCommitted?.memberCount == 5)
        let report = simulator.finish()
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        #expect(report.lrtqSecretReadable == true)
        #expect(report.warnings > 0)
    }

    @Test("the upgrade is forced while healing if the random actions never asked for it")
    func upgradeWhileHealing() {
        let (report, simulator) = Self.run(
            SimulationOptions(nodes: 5, seed: 8, events: 1, faults: .all, startInLrtq: true)
        )
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        #expect(report.lrtqSecretReadable == true)
        #expect(simulator.controlPlane.committedEpochs.first.map { $0 >= 2 } == true)
    }

    @Test("an LRTQ run replays exactly from its log; the log records the LRTQ start")
    func replay() throws {
        let options = SimulationOptions(nodes: 5, seed: 99, events: 3000, faults: .all, startInLrtq: true)
        let (report, simulator) = Self.run(options)
        let text = EventLog.encode(options: options, events: simulator.log)
        #expect(text.contains("\"startInLrtq\":true"))
        let (decoded, events) = try EventLog.decode(text)
        #expect(decoded == options)
        let (replayReport, replayed) = Simulator.replay(decoded, events: events)
        #expect(replayed.stateSummary == simulator.stateSummary)
        #expect(replayReport.epochsCommitted == report.epochsCommitted)
        #expect(replayReport.warnings == report.warnings)
        // A log written before LRTQ existed (no startInLrtq key) still reads, as a TQ start.
        let old = EventLog.encode(options: SimulationOptions(nodes: 3, seed: 1, events: 1), events: [.rotate])
            .replacingOccurrences(of: ",\"startInLrtq\":false", with: "")
        #expect(!old.contains("startInLrtq"))
        #expect(try EventLog.decode(old).0.startInLrtq == false)
    }

    @Test("a TQ run ignores the upgrade event, never warns, and reports no LRTQ result")
    func tqRunIgnoresUpgrade() {
        let (report, simulator) = Simulator.replay(
            SimulationOptions(nodes: 3, seed: 1, events: 0),
            events: [.rotate, .upgradeFromLrtq, .tick]
        )
        #expect(report.violations.isEmpty)
        #expect(report.warnings == 0)
        #expect(report.lrtqSecretReadable == nil)
        #expect(simulator.controlPlane.highestEpoch == 1)
    }

    @Test("the runner's JSON names the start, counts warnings and reports the epoch-1 check")
    func runnerJSON() throws {
        let outcome = SimulationRunner.run(
            SimulationOptions(nodes: 4, seed: 5, events: 800, faults: .all, startInLrtq: true)
        )
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(outcome.json().utf8)) as? [String: Any]
        )
        #expect(object["start"] as? String == "lrtq")
        #expect((object["warnings"] as? Int ?? 0) > 0)
        #expect(object["lrtq_secret_readable_as_epoch_1"] as? Bool == true)
        #expect(object["lrtq_nodes_added"] as? Int == outcome.report.lrtqNodesAdded)
        #expect(object["liveness"] as? Bool == true)
        let plain = SimulationRunner.run(SimulationOptions(nodes: 3, seed: 5, events: 100))
        let plainObject = try #require(
            try JSONSerialization.jsonObject(with: Data(plain.json().utf8)) as? [String: Any]
        )
        #expect(plainObject["start"] as? String == "tq")
        #expect(plainObject["lrtq_secret_readable_as_epoch_1"] == nil)
        #expect(plainObject["lrtq_nodes_added"] == nil)
    }

    @Test("caught: a node that committed a trust-quorum configuration still holds LRTQ state")
    func neverBackToLrtq() {
        let share = try! Share(x: 1, y: SecretBytes([UInt8](repeating: 5, count: 32)))
        let lrtq = LrtqState(shareDigests: [share.digest], threshold: 2, share: share, spareShares: [])
        var nodes = InvariantCheckerTests.healthy
        let cp = ControlPlaneView(lastCommitted: nil, committedMembers: [])
        #expect(InvariantChecker.check(nodes: nodes, controlPlane: cp).isEmpty)
        // In LRTQ, nothing committed: fine.
        nodes.append(
            NodeView(
                id: InvariantCheckerTests.ids[4],
                state: PersistentState(lrtq: lrtq, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
            )
        )
        #expect(InvariantChecker.check(nodes: nodes, controlPlane: cp).isEmpty)
        nodes[1].state.lrtq = lrtq
        #expect(InvariantChecker.check(nodes: nodes, controlPlane: cp).map(\.invariant) == [.neverBackToLrtq])
    }
}
