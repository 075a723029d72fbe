import Foundation
import KeyrackCore
import Testing
import TrustQuorum

@testable import Simulation

/// The Byzantine fault: one node forges `Expunged`, `CommitAdvance` and
/// `Prepare` at any epoch, sends shares that fail their digest and replays
/// old signed messages; the honest nodes keep their shares, commit only what
/// the operator signed, and stay live.
@Suite("Simulator: a Byzantine node")
struct ByzantineTests {
    static func run(_ simulator: Simulator) -> SimulationReport {
        simulator.apply(.rotate)
        while simulator.log.count < simulator.options.events && simulator.violations.isEmpty {
            simulator.apply(simulator.nextEvent())
        }
        return simulator.finish()
    }

    @Test(
        "runs with every fault and the Byzantine node are clean and live", arguments: [1, 2, 3, 5, 8, 13] as [UInt64])
    func clean(seed: UInt64) {
        let report = Simulator.run(
            SimulationOptions(nodes: 6, seed: seed, events: 6000, faults: FaultSet.all.union(.byzantine)))
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        #expect(report.alarms == 0)
        #expect(report.forgeries > 100)
        #expect(report.rejected > 0)
        #expect(report.epochsCommitted > 5)
    }

    @Test("every kind of forgery is made, at every kind of epoch, and each is refused or harmless")
    func forgeryKinds() {
        let simulator = Simulator(options: SimulationOptions(nodes: 5, seed: 4, events: 0, faults: .byzantine))
        simulator.settle(after: .rotate)
        var kinds: Set<String> = []
        for seed in UInt64(0)..<60 {
            let message = simulator.forgery(seed: seed, target: 0)
            switch message.kind {
            case .expunged: kinds.insert("expunged")
            case .commitAdvance: kinds.insert("commitAdvance")
            case .prepare(let config, _, _): kinds.insert(config.epoch == Epoch(UInt64.max) ? "prepare-max" : "prepare")
            case .share: kinds.insert("share")
            default: kinds.insert("other")
            }
        }
        #expect(kinds.isSuperset(of: ["expunged", "commitAdvance", "prepare", "prepare-max", "share"]))
        let before = simulator.nodes[0].persisted
        for seed in UInt64(0)..<60 { simulator.apply(.forge(target: 0, seed: seed)) }
        #expect(simulator.violations.isEmpty, "\(simulator.violations)")
        #expect(simulator.nodes[0].persisted.latestCommittedEpoch == before.latestCommittedEpoch)
        #expect(simulator.nodes[0].persisted.shares == before.shares)
        #expect(simulator.nodes[0].node.rejectedMessages + simulator.nodes[0].node.rejectedShares >= 40)
    }

    @Test("nodes that trust any signature are caught by the trust invariants")
    func weakenedNodesAreCaught() {
        var caught: Set<Invariant> = []
        for seed in UInt64(1)...4 {
            let simulator = Simulator(
                options: SimulationOptions(nodes: 5, seed: seed, events: 4000, faults: .byzantine),
                trustingAnySignature: true)
            let report = Self.run(simulator)
            if let violation = report.violations.first { caught.insert(violation.invariant) }
        }
        #expect(!caught.isEmpty)
        #expect(
            caught.isSubset(of: [
                .sharesKept, .onlySignedCommits, .configurationsAgree, .noAlarms, .noShareOutsideMembership,
                .expungedKnowsOrListed,
            ]))
        #expect(caught.contains(.sharesKept) || caught.contains(.onlySignedCommits))
    }

    @Test("the trust check: a lost share, an unsigned commit, an expunge nobody signed")
    func trustCheck() throws {
        let simulator = Simulator(options: SimulationOptions(nodes: 4, seed: 9, events: 0, faults: []))
        simulator.settle(after: .rotate)
        let state = simulator.nodes[0].persisted
        let latest = try #require(state.latestCommittedEpoch)
        let signed = simulator.signedCommits
        var view = NodeView(id: simulator.ids[0], state: state)
        let (clean, held) = InvariantChecker.checkTrust(view, before: nil, signedCommits: signed)
        #expect(clean.isEmpty)
        #expect(held?.epoch == latest && held?.held == true)
        view.state.shares[latest] = nil
        #expect(
            InvariantChecker.checkTrust(view, before: held, signedCommits: signed).0.map(\.invariant) == [.sharesKept])
        #expect(
            InvariantChecker.checkTrust(view, before: held, signedCommits: [:]).0.map(\.invariant).contains(
                .onlySignedCommits))
        view = NodeView(id: simulator.ids[0], state: state)
        view.state.expunged = ExpungedMetadata(epoch: Epoch(latest.value + 1), from: simulator.ids[1])
        #expect(
            InvariantChecker.checkTrust(view, before: held, signedCommits: signed).0.map(\.invariant) == [.sharesKept])
    }

    @Test("a Byzantine run replays exactly from its log")
    func replay() throws {
        let options = SimulationOptions(nodes: 5, seed: 21, events: 3000, faults: FaultSet.all.union(.byzantine))
        let original = Simulator(options: options)
        let report = Self.run(original)
        let (replayed, simulator) = Simulator.replay(options, events: original.log)
        #expect(replayed == report)
        #expect(simulator.stateSummary == original.stateSummary)
        #expect(FaultSet(parsing: "all,byzantine") == FaultSet.all.union(.byzantine))
        #expect(FaultSet(parsing: "byzantine")?.names == ["byzantine"])
    }
}
