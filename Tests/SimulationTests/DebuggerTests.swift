import Foundation
import KeyrackCore
import SecretSharing
import Testing
import TrustQuorum

@testable import Simulation

/// A deliberately broken node variant, for these tests only: as a
/// coordinator it equivocates, sending members with an odd serial a
/// `Prepare` whose configuration carries another encrypted chain (the
/// ticket does not cover the chain and the share still matches its digest,
/// so the member accepts it).
let equivocatingCoordinator: @Sendable (Int, inout NodeOutput) -> Void = { _, output in
    output.messages = output.messages.map { outgoing in
        guard case .prepare(let config, let share, let ticket) = outgoing.message.kind,
            let last = outgoing.to.serial.last?.wholeNumberValue, last % 2 == 1
        else { return outgoing }
        let altered = try! Configuration(
            rackId: config.rackId,
            epoch: config.epoch,
            coordinator: config.coordinator,
            members: config.members,
            threshold: config.threshold,
            encryptedRackSecrets: EncryptedRackSecrets(
                salt: Array(repeating: 0xEE, count: 32), ciphertext: Array(repeating: 0xEE, count: 48))
        )
        return OutgoingMessage(
            to: outgoing.to,
            message: Message(rackId: outgoing.message.rackId, kind: .prepare(altered, share, ticket))
        )
    }
}

func brokenSimulator(_ options: SimulationOptions) -> Simulator {
    let simulator = Simulator(options: options)
    simulator.outputTamper = equivocatingCoordinator
    return simulator
}

/// Generates a run the way `Simulator.run` does, on `simulator`, and returns its log text.
func record(_ simulator: Simulator) -> String {
    simulator.apply(.rotate)
    while simulator.log.count < simulator.options.events && simulator.violations.isEmpty {
        simulator.apply(simulator.nextEvent())
    }
    _ = simulator.finish()
    return EventLog.encode(options: simulator.options, events: simulator.log)
}

@Suite("The step-through debugger")
struct DebuggerTests {
    let options = SimulationOptions(nodes: 5, seed: 42, events: 1500)

    @Test("running a log to the end reproduces the recorded run exactly")
    func replayIsExact() throws {
        let original = Simulator(options: options)
        let text = record(original)
        #expect(original.violations.isEmpty)
        let debugger = try Debugger(logText: text)
        let transcript = debugger.run(script: "run\nsummary")
        #expect(debugger.position == original.log.count)
        #expect(debugger.stateSummary == original.stateSummary)
        #expect(transcript.contains("end of the log (\(original.log.count) events)"))
        #expect(transcript.contains("violations: none"))
    }

    @Test("a run with a broken node: the scripted debugger stops at the violating event and names the invariant")
    func stopsAtViolation() throws {
        let recorded = brokenSimulator(options)
        let text = record(recorded)
        let violation = try #require(recorded.violations.first)
        #expect(violation.invariant == .configurationsAgree)
        let index = try #require(violation.eventIndex)
        let (options, events) = try EventLog.decode(text)

        let debugger = Debugger(options: options, events: events, makeSimulator: brokenSimulator)
        let transcript = debugger.run(script: "break alarm\nrun\nsummary\nstep")
        #expect(debugger.position == index + 1)
        #expect(
            transcript.contains("VIOLATION of invariant configurations-agree at event \(index):"), "\(transcript)")
        #expect(transcript.contains("stopped at a violation of configurations-agree (event \(index))"))
        #expect(debugger.violation?.invariant == .configurationsAgree)

        // The broken variant is what breaks the run: the same log replayed
        // with correct nodes has no violation.
        let correct = Debugger(options: options, events: events)
        _ = correct.execute("run")
        #expect(correct.violation == nil)
        #expect(correct.position == events.count)
    }

    @Test("breakpoints: event N, node ID, alarm; step counts")
    func breakpoints() throws {
        let debugger = try Debugger(logText: record(Simulator(options: options)))
        #expect(debugger.execute("break event 40") == "breakpoint 1: event 40")
        var output = debugger.execute("run")
        #expect(debugger.position == 41)
        #expect(output.contains("breakpoint: event 40"))
        #expect(debugger.execute("delete 1").hasPrefix("deleted breakpoint 1"))

        _ = debugger.execute("break node 3")
        output = debugger.execute("run")
        let applied = debugger.events[debugger.position - 1]
        #expect(output.contains("breakpoint: node 3"))
        #expect(debugger.position < debugger.events.count)
        // It stopped at an event that names node 3 or changed it.
        let names = "\(Debugger.describe(applied))".contains("n3")
        let diff = debugger.execute("diff")
        #expect(names || diff.contains("node 3 "), "\(output)\n\(diff)")

        _ = debugger.execute("delete")
        let before = debugger.position
        output = debugger.execute("step 7")
        #expect(debugger.position == before + 7)
        #expect(debugger.execute("step 0") == "step takes a positive count")
        #expect(debugger.execute("break event x") == "usage: break event N")
        #expect(debugger.execute("show node 99") == "no node 99")
    }

    @Test("rewind goes back to exactly the state of a fresh replay")
    func rewind() throws {
        let text = record(Simulator(options: options))
        let debugger = try Debugger(logText: text)
        _ = debugger.execute("step 300")
        _ = debugger.execute("rewind 120")
        #expect(debugger.position == 180)
        let fresh = try Debugger(logText: text)
        _ = fresh.execute("step 180")
        #expect(debugger.stateSummary == fresh.stateSummary)
        #expect(debugger.execute("diff") == fresh.execute("diff"))
        _ = debugger.execute("rewind 1000")
        #expect(debugger.position == 0)
        #expect(debugger.execute("diff") == "no step yet")
    }

    @Test("show node prints configurations, share digests (never share bytes), commits and the coordinator phase")
    func showNode() throws {
        let simulator = Simulator(options: options)
        let text = record(simulator)
        let debugger = try Debugger(logText: text)
        _ = debugger.execute("step 600")
        let output = debugger.execute("show node n1")
        for field in ["status:", "phase:", "committed:", "latest committed:", "configuration ", "share ", "sha256"] {
            #expect(output.contains(field), "\(field) missing in \(output)")
        }
        // Shares appear only as digests: no share's bytes are printed.
        let node = debugger.simulator.nodes[1].node
        for share in node.persistentState.shares.values {
            let bytes = share.y.withUnsafeBytes { Array($0) }
            #expect(!output.contains(bytes.hexString.prefix(16)))
            #expect(output.contains(ShareDigest(of: share).hex.prefix(16)))
        }
        #expect(debugger.execute("show node BRM42101") == output)
        // The coordinator phase is shown while a node coordinates.
        let coordinating = try Debugger(logText: text)
        _ = coordinating.execute("step")
        let phases = (0..<options.nodes).map { coordinating.execute("show node \($0)") }
        #expect(phases.contains { $0.contains("phase: coordinating epoch 1: preparing") })
    }

    @Test("events and summary")
    func eventsAndSummary() throws {
        let debugger = try Debugger(logText: record(Simulator(options: options)))
        _ = debugger.execute("step 3")
        let events = debugger.execute("events 0 5").split(separator: "\n")
        #expect(events.count == 6)
        #expect(events[0].contains("0: operator: rotate the secret"))
        #expect(events[2].hasPrefix(">"))
        let summary = debugger.execute("summary")
        #expect(summary.contains("position: 3 of \(debugger.events.count) events"))
        #expect(summary.contains("control plane reconfiguring: epoch 1"))
    }
}
