import Foundation
import KeyrackCore
import PropertyBased
import SecretSharing
import Testing
import TrustQuorum

@testable import Simulation

@Suite("Simulator")
struct SimulatorTests {
    @Test("a run without faults commits, loads and is live")
    func noFaults() {
        let report = Simulator.run(SimulationOptions(nodes: 5, seed: 11, events: 3000, faults: []))
        #expect(report.violations.isEmpty)
        #expect(report.liveness, "\(report.livenessDetail ?? "")")
        #expect(report.epochsCommitted > 10)
        #expect(report.alarms == 0)
    }

    @Test("the same seed gives the same run; the log replays it exactly")
    func determinismAndReplay() throws {
        let options = SimulationOptions(nodes: 6, seed: 77, events: 3000, faults: .all)
        let first = Simulator(options: options)
        first.apply(.rotate)
        while first.log.count < options.events { first.apply(first.nextEvent()) }
        let firstReport = first.finish()
        let second = Simulator(options: options)
        second.apply(.rotate)
        while second.log.count < options.events { second.apply(second.nextEvent()) }
        _ = second.finish()
        #expect(first.log == second.log)
        #expect(first.stateSummary == second.stateSummary)

        let text = EventLog.encode(options: options, events: first.log)
        let (decodedOptions, events) = try EventLog.decode(text)
        #expect(decodedOptions == options)
        #expect(events == first.log)
        let (replayReport, replayed) = Simulator.replay(decodedOptions, events: events)
        #expect(replayed.stateSummary == first.stateSummary)
        #expect(replayReport.epochsCommitted == firstReport.epochsCommitted)
        #expect(replayReport.messagesSent == firstReport.messagesSent)
    }

    @Test("a corrupt log is refused with its line number")
    func corruptLog() {
        #expect(throws: EventLog.ParseError(line: 1, reason: "not a keyrack simulation log header")) {
            try EventLog.decode("{}\n")
        }
        let good = EventLog.encode(options: SimulationOptions(nodes: 3, seed: 1, events: 1), events: [.tick, .rotate])
        let bad = good.replacingOccurrences(of: "\"index\":1", with: "\"index\":5")
        #expect(throws: EventLog.ParseError.self) { try EventLog.decode(bad) }
        let tooMany = good.replacingOccurrences(of: "\"nodes\":3", with: "\"nodes\":300")
        #expect(throws: EventLog.ParseError(line: 1, reason: "options out of range")) {
            try EventLog.decode(tooMany)
        }
        // Events naming nodes or epochs that do not exist are no-ops, not crashes.
        let (report, _) = Simulator.replay(
            SimulationOptions(nodes: 3, seed: 1, events: 0),
            events: [
                .rotate, .deliver(from: 99, to: -1), .crashForEpochs(node: 1, epochs: Int.max), .restart(node: 1),
                .loadSecret(node: 7, epoch: .max), .addNode(node: 40), .removeNode(node: -3), .partition(mask: .max),
            ]
        )
        #expect(report.violations.isEmpty)
    }

    @Test("the runner prints one JSON object with the documented keys, and replays its own log")
    func runnerJSON() throws {
        let outcome = SimulationRunner.run(SimulationOptions(nodes: 4, seed: 3, events: 500))
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(outcome.json().utf8)) as? [String: Any]
        )
        for key in ["events", "events_per_sec", "epochs_committed", "alarms", "violations", "liveness"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["liveness"] as? Bool == true)
        #expect((object["violations"] as? [Any])?.isEmpty == true)
        #expect(object["events"] as? Int == outcome.report.events)
        let replayed = try SimulationRunner.replay(logText: outcome.logText())
        #expect(replayed.report.violations.isEmpty)
        #expect(replayed.report.events == outcome.report.events)
        #expect(replayed.report.epochsCommitted == outcome.report.epochsCommitted)
    }

    @Test("a violation is reported with its invariant and event index, and the run stops")
    func violationStopsRun() {
        let simulator = Simulator(options: SimulationOptions(nodes: 3, seed: 1, events: 0, faults: []))
        simulator.settle(after: .rotate)
        // Corrupt one node's disk behind the protocol's back: a different
        // configuration for epoch 1 appears when it restarts.
        let config = simulator.nodes[1].persisted.configurations[1]!
        simulator.nodes[1].persisted.configurations[1] = try! Configuration(
            rackId: config.rackId,
            epoch: 1,
            coordinator: config.coordinator,
            members: config.members,
            threshold: config.threshold + 1,
            encryptedRackSecrets: nil
        )
        simulator.apply(.crash(node: 1))
        let index = simulator.log.count - 1
        #expect(simulator.violations.first?.invariant == .configurationsAgree)
        #expect(simulator.violations.first?.eventIndex == index)
        let report = simulator.finish()
        #expect(!report.liveness)
        #expect(report.events == index + 1)
    }

    @Test("fault names parse")
    func faultNames() {
        #expect(FaultSet(parsing: "drop,crash") == [.drop, .crash])
        #expect(FaultSet(parsing: "all") == .all)
        #expect(FaultSet(parsing: "none") == [])
        #expect(FaultSet(parsing: "drop,meteor") == nil)
        #expect(FaultSet.all.names == ["drop", "reorder", "duplicate", "partition", "crash"])
    }

    @Test("the simulator exercises removal, expungement, share computation and coordinator crashes")
    func coverage() {
        var expunged = 0
        var computed = 0
        var removals = 0
        for seed in UInt64(1)...6 {
            let simulator = Simulator(options: SimulationOptions(nodes: 5, seed: seed, events: 4000, faults: .all))
            simulator.apply(.rotate)
            while simulator.log.count < 4000 && simulator.violations.isEmpty {
                let event = simulator.nextEvent()
                if case .removeNode = event { removals += 1 }
                simulator.apply(event)
                computed += simulator.nodes.filter { $0.up && $0.node.computingShareEpoch != nil }.count
            }
            let report = simulator.finish()
            #expect(report.violations.isEmpty, "\(report.violations)")
            #expect(report.liveness, "seed \(seed): \(report.livenessDetail ?? "")")
            expunged += simulator.nodes.filter { $0.persisted.expunged != nil }.count
        }
        #expect(removals > 0)
        #expect(expunged > 0)
        #expect(computed > 0)
    }

    @Test("property: generated action sequences keep every invariant and end live")
    func generatedActions() async {
        // Each action is (kind, a, b); out-of-range or impossible actions are no-ops.
        let action = zip(Gen.int(in: 0...14), Gen.int(in: 0...8), Gen.int(in: 0...8))
        await propertyCheck(count: 40, input: Gen.int(in: 3...7), action.array(of: 1...300)) { nodes, actions in
            let simulator = Simulator(options: SimulationOptions(nodes: nodes, seed: 5, events: 0, faults: .all))
            simulator.apply(.rotate)
            for (kind, a, b) in actions {
                let event: SimulationEvent
                switch kind {
                case 0...4: event = .deliver(from: a, to: b)
                case 5: event = .drop(from: a, to: b)
                case 6: event = .duplicate(from: a, to: b)
                case 7: event = .reorder(from: a, to: b)
                case 8: event = a % 3 == 0 ? .heal : .partition(mask: UInt64(a * 37 + b))
                case 9: event = a % 2 == 0 ? .crash(node: b) : .restart(node: b)
                case 10: event = .tick
                case 11: event = a == 0 ? .rotate : (a % 2 == 0 ? .addNode(node: b) : .removeNode(node: b))
                case 12: event = .loadSecret(node: a, epoch: UInt64(b))
                case 13: event = .crashForEpochs(node: a, epochs: b)
                default: event = .reconnectAll
                }
                simulator.apply(event)
                if !simulator.violations.isEmpty { break }
            }
            let report = simulator.finish()
            #expect(report.violations.isEmpty, "\(report.violations)")
            #expect(report.liveness, "\(report.livenessDetail ?? "")")
        }
    }

    /// The many-seed run with every fault on. The event budget per run scales
    /// with `KEYRACK_SIM_EVENTS` (default 2,000, so that a debug `swift test`
    /// stays quick); CI runs the large budget in release with `keyrack sim`.
    @Test("many seeds and sizes with every fault: no violation, liveness holds")
    func manySeeds() {
        let budget = ProcessInfo.processInfo.environment["KEYRACK_SIM_EVENTS"].flatMap(Int.init) ?? 2000
        let sizes = [3, 4, 5, 8, 9, 16, 32]
        var total = 0
        for (offset, nodes) in sizes.enumerated() {
            for seed in UInt64(1)...3 {
                // One run in three sends every message through the wire format.
                let options = SimulationOptions(
                    nodes: nodes,
                    seed: seed * 1000 + UInt64(offset),
                    events: budget,
                    wireEncoding: seed == 1
                )
                let report = Simulator.run(options)
                total += report.events
                #expect(report.violations.isEmpty, "nodes \(nodes) seed \(options.seed): \(report.violations)")
                #expect(report.liveness, "nodes \(nodes) seed \(options.seed): \(report.livenessDetail ?? "")")
            }
        }
        #expect(total >= budget * sizes.count * 3)
    }

    @Test("messages per reconfiguration grow linearly in N")
    func messagesLinear() {
        let counts = [4, 8, 16, 32].map { Measurements.messagesPerReconfiguration(nodes: $0, rotations: 3) }
        let perNode = counts.map { $0.messagesPerReconfiguration / Double($0.nodes) }
        // Linear: messages / N stays within a constant band (about 4).
        for ratio in perNode { #expect(ratio > 2 && ratio < 6, "\(counts)") }
        // Doubling N from 16 to 32 adds about twice what doubling from 8 to 16 added.
        let m = counts.map(\.messagesPerReconfiguration)
        let growth = (m[3] - m[2]) / (m[2] - m[1])
        #expect(growth > 1.5 && growth < 2.5, "\(counts)")
    }

    @Test("catching up after 30 missed epochs reads the first epoch's secret")
    func catchUp() throws {
        let catchUp = try #require(Measurements.prepareCatchUp(missedEpochs: 30))
        #expect(catchUp.latestEpoch.value >= 31)
        #expect(catchUp.run() == catchUp.expectedFirstSecret)
    }
}
