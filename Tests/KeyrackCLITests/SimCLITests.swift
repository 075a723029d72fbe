import Foundation
import Testing

@Suite("keyrack sim, through the real binary")
struct SimCLITests {
    func run(_ arguments: [String]) async throws -> (ProcessResult, [String: Any]) {
        let result = try await runKeyrack(["sim"] + arguments)
        let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any] ?? [:]
        return (result, object)
    }

    @Test("one JSON object with the documented keys; exit 0 with no violation and liveness")
    func output() async throws {
        let (result, object) = try await run(["--nodes", "5", "--seed", "7", "--events", "3000", "--json"])
        #expect(result.status == 0, "\(result.standardError)")
        for key in ["events", "events_per_sec", "epochs_committed", "alarms", "violations", "liveness"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["liveness"] as? Bool == true)
        #expect((object["violations"] as? [Any])?.isEmpty == true)
        #expect((object["events"] as? Int ?? 0) >= 3000)
    }

    @Test("a run's log replays to the same result")
    func replay() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sim-\(UUID()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (first, original) = try await run([
            "--nodes", "4", "--seed", "11", "--events", "2000", "--log", log, "--json",
        ])
        #expect(first.status == 0)
        let (second, replayed) = try await run(["--replay", log, "--json"])
        #expect(second.status == 0, "\(second.standardError)")
        for key in ["events", "epochs_committed", "alarms", "liveness"] {
            #expect("\(original[key] ?? "-")" == "\(replayed[key] ?? "-")", "\(key)")
        }
    }

    @Test("bad options are usage errors")
    func usage() async throws {
        #expect(try await runKeyrack(["sim", "--nodes", "2"]).status != 0)
        #expect(try await runKeyrack(["sim", "--faults", "gremlins"]).status != 0)
    }

    @Test(
        "at least 1,000,000 simulated events across cluster sizes and seeds, every fault and the Byzantine node on: no violation, liveness"
    )
    func million() async throws {
        let runs: [(nodes: Int, seed: Int, events: Int)] = [3, 4, 5, 8, 9, 16, 24, 32].flatMap { nodes in
            (1...4).map { seed in (nodes, seed * 7919 + nodes, 32_000) }
        }
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            var total = 0
            var pending = runs[...]
            // Two at a time: one per core.
            for _ in 0..<2 {
                if let next = pending.popFirst() { group.addTask { try await simulate(next) } }
            }
            while let events = try await group.next() {
                total += events
                if let next = pending.popFirst() { group.addTask { try await simulate(next) } }
            }
            return total
        }
        #expect(total >= 1_000_000)
    }
}

/// Runs one simulation with every fault (the Byzantine node's included) and returns its event count; records
/// an issue naming the run if it fails.
private func simulate(_ run: (nodes: Int, seed: Int, events: Int)) async throws -> Int {
    let arguments = [
        "sim", "--nodes", "\(run.nodes)", "--seed", "\(run.seed)", "--events", "\(run.events)",
        "--faults", "drop,reorder,duplicate,partition,crash,byzantine", "--json",
    ]
    let result = try await runKeyrack(arguments)
    let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any] ?? [:]
    #expect(result.status == 0, "keyrack \(arguments.joined(separator: " ")): \(result.output) \(result.standardError)")
    #expect(object["liveness"] as? Bool == true, "nodes \(run.nodes) seed \(run.seed)")
    #expect((object["violations"] as? [Any])?.isEmpty == true, "nodes \(run.nodes) seed \(run.seed)")
    #expect((object["forgeries"] as? Int ?? 0) > 100, "nodes \(run.nodes) seed \(run.seed): the Byzantine node forged")
    return object["events"] as? Int ?? 0
}

@Suite("keyrack sim debug and --timeline, through the real binary")
struct SimDebugCLITests {
    @Test("a scripted debugging session over a logged run, and its SVG timeline")
    func scriptedSession() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sim-debug-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("run.jsonl").path
        let svg = directory.appendingPathComponent("run.svg").path
        let commands = directory.appendingPathComponent("commands.txt").path
        let run = try await runKeyrack([
            "sim", "--nodes", "4", "--seed", "5", "--events", "600", "--log", log, "--timeline", svg,
        ])
        #expect(run.status == 0, "\(run.standardError)")
        try """
        # a comment
        break event 20
        run
        show node 0
        diff
        rewind 5
        events 14 16
        delete
        run
        summary
        """.write(toFile: commands, atomically: true, encoding: .utf8)
        let session = try await runKeyrack(["sim", "debug", log, "--commands", commands])
        #expect(session.status == 0, "\(session.standardError)")
        let output = session.output
        #expect(output.contains("(sim) break event 20\nbreakpoint 1: event 20"), "\(output)")
        #expect(output.contains("breakpoint: event 20"))
        #expect(output.contains("node 0 (913-0000019:BRM42100) after 21 event(s)"))
        #expect(output.contains("rewound to after event 15"))
        #expect(output.contains("> 15: "))
        #expect(output.contains("end of the log"))
        #expect(output.contains("violations: none"))

        let picture = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(picture.hasPrefix("<?xml"))
        #expect(picture.components(separatedBy: "<g class=\"lane\"").count - 1 == 8)  // 4 nodes + 4 spares

        // Interactive mode reads the same commands from standard input.
        let interactive = try await runKeyrack(["sim", "debug", log], text: "step 2\nsummary\nquit\n")
        #expect(interactive.status == 0)
        #expect(interactive.output.contains("(sim) event 0: operator: rotate the secret"))
        #expect(interactive.output.contains("position: 2 of"))

        #expect(try await runKeyrack(["sim", "debug", directory.appendingPathComponent("missing").path]).status != 0)
    }
}
