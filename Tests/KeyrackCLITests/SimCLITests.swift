import Foundation
import Testing

@Suite("keyrack sim, through the real binary")
struct SimCLITests {
    func run(_ arguments: [String]) throws -> (ProcessResult, [String: Any]) {
        let result = try runKeyrack(["sim"] + arguments)
        let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any] ?? [:]
        return (result, object)
    }

    @Test("one JSON object with the documented keys; exit 0 with no violation and liveness")
    func output() throws {
        let (result, object) = try run(["--nodes", "5", "--seed", "7", "--events", "3000", "--json"])
        #expect(result.status == 0, "\(result.standardError)")
        for key in ["events", "events_per_sec", "epochs_committed", "alarms", "violations", "liveness"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["liveness"] as? Bool == true)
        #expect((object["violations"] as? [Any])?.isEmpty == true)
        #expect((object["events"] as? Int ?? 0) >= 3000)
    }

    @Test("a run's log replays to the same result")
    func replay() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sim-\(UUID()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (first, original) = try run(["--nodes", "4", "--seed", "11", "--events", "2000", "--log", log, "--json"])
        #expect(first.status == 0)
        let (second, replayed) = try run(["--replay", log, "--json"])
        #expect(second.status == 0, "\(second.standardError)")
        for key in ["events", "epochs_committed", "alarms", "liveness"] {
            #expect("\(original[key] ?? "-")" == "\(replayed[key] ?? "-")", "\(key)")
        }
    }

    @Test("bad options are usage errors")
    func usage() throws {
        #expect(try runKeyrack(["sim", "--nodes", "2"]).status != 0)
        #expect(try runKeyrack(["sim", "--faults", "gremlins"]).status != 0)
    }

    @Test("at least 1,000,000 simulated events across cluster sizes and seeds, every fault on: no violation, liveness")
    func million() async throws {
        let runs: [(nodes: Int, seed: Int, events: Int)] = [3, 4, 5, 8, 9, 16, 24, 32].flatMap { nodes in
            (1...4).map { seed in (nodes, seed * 7919 + nodes, 32_000) }
        }
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            var total = 0
            var pending = runs[...]
            // Two at a time: one per core.
            for _ in 0..<2 {
                if let next = pending.popFirst() { group.addTask { try simulate(next) } }
            }
            while let events = try await group.next() {
                total += events
                if let next = pending.popFirst() { group.addTask { try simulate(next) } }
            }
            return total
        }
        #expect(total >= 1_000_000)
    }
}

/// Runs one simulation with every fault and returns its event count; records
/// an issue naming the run if it fails.
private func simulate(_ run: (nodes: Int, seed: Int, events: Int)) throws -> Int {
    let arguments = [
        "sim", "--nodes", "\(run.nodes)", "--seed", "\(run.seed)", "--events", "\(run.events)",
        "--faults", "drop,reorder,duplicate,partition,crash", "--json",
    ]
    let result = try runKeyrack(arguments)
    let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any] ?? [:]
    #expect(result.status == 0, "keyrack \(arguments.joined(separator: " ")): \(result.output) \(result.standardError)")
    #expect(object["liveness"] as? Bool == true, "nodes \(run.nodes) seed \(run.seed)")
    #expect((object["violations"] as? [Any])?.isEmpty == true, "nodes \(run.nodes) seed \(run.seed)")
    return object["events"] as? Int ?? 0
}
