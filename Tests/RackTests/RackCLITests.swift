import Foundation
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// `keyrack rack …` and `keyrack node …` as an operator runs them.
@Suite("keyrack rack and keyrack node")
struct RackCLITests {
    @Test("rack init, status, rotate and node disk-key from the command line")
    func commandLine() async throws {
        try await withRack(count: 3) { rack in
            for index in 0..<3 { try rack.launch(index) }
            for index in 0..<3 { try await rack.waitUntilAnswering(index) }
            let nodes = rack.sockets().joined(separator: ",")
            let keyrack = try keyrackExecutable()
            let initialized = try await runToCompletion(
                keyrack,
                ["rack", "init", "--operator", rack.operatorDirectory.path, "--nodes", nodes, "--threshold", "2"])
            #expect(initialized.status == 0, "\(initialized.errors)")
            #expect(initialized.output.contains("epoch 1 committed: N=3, K=2"))
            #expect(initialized.output.contains("done: epoch 1"))
            try await rack.waitUntil(Array(0..<3), "unlocked") { $0.unlockedEpoch == Epoch(1) }

            let status = try await runToCompletion(keyrack, ["rack", "status", "--nodes", nodes])
            #expect(status.status == 0)
            let rows = status.output.split(separator: "\n")
            #expect(rows.count == 4)
            for member in rack.members {
                let row = try #require(rows.first { $0.hasPrefix(member.platform.description) })
                let columns = row.split(separator: " ", omittingEmptySubsequences: true)
                #expect(Array(columns.prefix(5)) == [Substring(member.platform.description), "1", "yes", "yes", "2"])
            }

            let hex = try await runToCompletion(
                keyrack, ["node", "disk-key", "--admin", rack.members[0].socket, "--disk", "data0"])
            #expect(hex.status == 0)
            let key = hex.output.trimmingCharacters(in: .newlines)
            #expect(key.count == 64 && [UInt8](hex: key) != nil)
            // The node can be named by its configuration file instead of its socket; by exactly one of them.
            let byConfig = try await runToCompletion(
                keyrack, ["node", "disk-key", "--config", rack.members[0].configurationFile, "--disk", "data0"])
            #expect(byConfig.status == 0, "\(byConfig.errors)")
            #expect(byConfig.output == hex.output)
            for arguments in [
                ["node", "disk-key", "--disk", "data0"],
                ["node", "status", "--admin", rack.members[0].socket, "--config", rack.members[0].configurationFile],
            ] {
                let refused = try await runToCompletion(keyrack, arguments)
                #expect(refused.status == 64)
                #expect(refused.errors.contains("exactly one of --admin SOCKET or --config FILE"))
            }
            let badConfig = try await runToCompletion(
                keyrack, ["node", "disk-key", "--config", "/nonexistent/node.json", "--disk", "data0"])
            #expect(badConfig.status == 1)
            #expect(badConfig.errors.contains("/nonexistent/node.json"))
            // --raw writes the key as 32 bytes; node 2's data0 has its own key (the platform id is in it).
            let socket = rack.members[1].socket
            let raw = try await offCooperativePool {
                try runProcessBlocking(keyrack, ["node", "disk-key", "--admin", socket, "--disk", "data0", "--raw"])
            }
            #expect(raw.status == 0)
            #expect(Array(raw.output) == [UInt8](hex: try await diskKey(rack, 1)))
            #expect(Array(raw.output) != [UInt8](hex: key))
            // The earlier release's key scheme is refused for a disk keyed under this one's.
            let legacy = try await runToCompletion(
                keyrack, ["node", "disk-key", "--admin", socket, "--disk", "data0", "--key-scheme", "1"])
            #expect(legacy.status == 1)
            #expect(legacy.errors.contains("not keyed under a v1 key"), "\(legacy.errors)")
            let badScheme = try await runToCompletion(
                keyrack, ["node", "disk-key", "--admin", socket, "--disk", "data0", "--key-scheme", "3"])
            #expect(badScheme.status == 64)
            #expect(badScheme.errors.contains("--key-scheme must be 1 or 2"))

            let rotated = try await runToCompletion(
                keyrack, ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", nodes])
            #expect(rotated.status == 0, "\(rotated.errors)")
            #expect(rotated.output.contains("done: epoch 2"))
            try await rack.waitUntil(Array(0..<3), "unlocked at epoch 2") { $0.unlockedEpoch == Epoch(2) }
            // --timeout is honoured: with no time at all the command gives up (after starting), and says how to resume.
            let hasty = try await runToCompletion(
                keyrack,
                ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", nodes, "--timeout", "0"])
            #expect(hasty.status == 1)
            #expect(hasty.errors.contains("re-run the same command to resume"))
            let resumed = try await runToCompletion(
                keyrack, ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", nodes])
            #expect(resumed.status == 0, "\(resumed.errors)")
            try await rack.waitUntil(Array(0..<3), "unlocked after the resumed rotation") {
                $0.unlockedEpoch == $0.committedEpoch && ($0.committedEpoch ?? Epoch(0)) > Epoch(2)
            }
            let rekeyed = try await runToCompletion(keyrack, ["rack", "status", "--nodes", nodes])
            #expect(rekeyed.output.range(of: "data0 [0-9]+→[0-9]+", options: .regularExpression) != nil)

            let unknown = try await runToCompletion(
                keyrack, ["node", "disk-key", "--admin", rack.members[0].socket, "--disk", "x"])
            #expect(unknown.status != 0)
            #expect(unknown.errors.contains("NODE-DISK-UNKNOWN"))
            let bad = try await runToCompletion(
                keyrack,
                ["rack", "remove", "--operator", rack.operatorDirectory.path, "--nodes", nodes, "--remove", "nocolon"])
            #expect(bad.status == 2)
            #expect(bad.errors.contains("not a platform id"))
        }
    }

    @Test("an interrupted rack command is resumed by running it again")
    func interruptedAndResumed() async throws {
        try await withRack(count: 4) { rack in
            let first = try await setUp(rack, [0, 1, 2, 3], threshold: 2)
            // Kill the operator as soon as it has asked a coordinator to start.
            let nodes = rack.sockets().joined(separator: ",")
            let keyrack = try keyrackExecutable()
            let interrupted = try KeyrackProcess(
                ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", nodes], environment: [:])
            let deadline = ContinuousClock.now + .seconds(20)
            while !interrupted.log.contains("asking"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            interrupted.signal(SIGKILL)
            interrupted.process.waitUntilExit()
            let resumed = try await runToCompletion(
                keyrack, ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", nodes])
            #expect(resumed.status == 0, "\(resumed.output) \(resumed.errors)")
            let statuses = try await rack.waitUntil([0, 1, 2, 3], "unlocked") {
                $0.unlockedEpoch == $0.committedEpoch && $0.committedEpoch! > first.epoch
            }
            #expect(Set(statuses.map(\.committedEpoch)).count == 1)
        }
    }

    @Test("rack add and rack remove from the command line, and every refusal of the rack commands")
    func addRemoveAndRefusals() async throws {
        try await withRack(count: 4) { rack in
            let keyrack = try keyrackExecutable()
            func keyrackRun(_ arguments: [String]) async throws -> (status: Int32, output: String, errors: String) {
                try await runToCompletion(keyrack, arguments)
            }
            let gone = rack.directory.appendingPathComponent("nobody.sock").path
            let first = rack.sockets([0, 1, 2]).joined(separator: ",")
            for index in 0..<3 { try rack.launch(index) }
            for index in 0..<3 { try await rack.waitUntilAnswering(index) }

            // Before setup: nothing to rotate, add to or remove from.
            for arguments in [
                ["rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", first],
                [
                    "rack", "add", "--operator", rack.operatorDirectory.path, "--nodes", first, "--add",
                    rack.members[3].socket,
                ],
                [
                    "rack", "remove", "--operator", rack.operatorDirectory.path, "--nodes", first, "--remove",
                    rack.members[0].platform.description,
                ],
            ] {
                let refused = try await keyrackRun(arguments)
                #expect(refused.status == 1)
                #expect(refused.errors.contains("the rack is not set up yet: run rack init first"), "\(refused.errors)")
            }
            // No operator identity: nothing is decided; one that does not exist: named.
            let unsigned = try await keyrackRun(["rack", "rotate", "--nodes", first])
            #expect(unsigned.status == 1)
            #expect(unsigned.errors.contains("--operator DIR is required"), "\(unsigned.errors)")
            let missing = try await keyrackRun(
                [
                    "rack", "rotate", "--operator", rack.directory.appendingPathComponent("nobody").path, "--nodes",
                    first,
                ])
            #expect(missing.status == 1)
            #expect(missing.errors.contains("holds no operator certificate"), "\(missing.errors)")
            // Setup needs every node; with none answering there is nothing to do.
            let partial = try await keyrackRun([
                "rack", "init", "--operator", rack.operatorDirectory.path, "--nodes", first + "," + gone,
            ])
            #expect(partial.status == 1)
            #expect(partial.errors.contains("setting up the rack needs every node"))
            let nobody = try await keyrackRun([
                "rack", "init", "--operator", rack.operatorDirectory.path, "--nodes", gone,
            ])
            #expect(nobody.status == 1)
            #expect(nobody.errors.contains("no node answered"))
            // Bad numbers and empty lists are refused before anything is asked.
            for (arguments, expected) in [
                (
                    [
                        "rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", first, "--timeout",
                        "nan",
                    ], "--timeout must be"
                ),
                (
                    [
                        "rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", first,
                        "--wait-for-down", "1e9",
                    ], "--wait-for-down must be"
                ),
                (["rack", "status", "--nodes", ","], "--nodes names no admin socket"),
            ] {
                let refused = try await keyrackRun(arguments)
                #expect(refused.status == 64, "\(arguments)")
                #expect(refused.errors.contains(expected), "\(refused.errors)")
            }

            let initialized = try await keyrackRun([
                "rack", "init", "--operator", rack.operatorDirectory.path, "--nodes", first, "--threshold", "2",
            ])
            #expect(initialized.status == 0, "\(initialized.errors)")
            // A node to add that is down.
            let down = try await keyrackRun([
                "rack", "add", "--operator", rack.operatorDirectory.path, "--nodes", first, "--add",
                rack.members[3].socket,
            ])
            #expect(down.status == 1)
            #expect(down.errors.contains("the node to add does not answer"))
            // Status shows an unreachable node, and says so in its exit status.
            let status = try await keyrackRun(["rack", "status", "--nodes", first + "," + gone])
            #expect(status.status == 1)
            #expect(status.output.split(separator: "\n").contains { $0.hasPrefix(gone) && $0.contains("unreachable") })
            #expect(status.errors.contains(gone))

            // Adding node 4, then removing node 2, end to end.
            try await rack.start(3)
            let added = try await keyrackRun([
                "rack", "add", "--operator", rack.operatorDirectory.path, "--nodes", first, "--add",
                rack.members[3].socket,
            ])
            #expect(added.status == 0, "\(added.errors)")
            #expect(added.output.contains("4 members"))
            let all = rack.sockets().joined(separator: ",")
            let removed = try await keyrackRun(
                [
                    "rack", "remove", "--operator", rack.operatorDirectory.path, "--nodes", all, "--remove",
                    rack.members[1].platform.description,
                ])
            #expect(removed.status == 0, "\(removed.errors)")
            #expect(removed.output.contains("3 members"))
            let statuses = try await rack.waitUntil([0, 2, 3], "unlocked without node 2") {
                $0.unlockedEpoch == $0.committedEpoch && $0.latestCommitted?.memberCount == 3
            }
            #expect(statuses.allSatisfy { $0.latestCommitted?.members[rack.members[1].platform] == nil })

            // A node of another rack is refused, whether named among the nodes or as one to add.
            try await withRack(count: 1) { other in
                try await other.start(0)
                let stranger = other.members[0].socket
                let mixed = try await keyrackRun([
                    "rack", "rotate", "--operator", rack.operatorDirectory.path, "--nodes", all + "," + stranger,
                ])
                #expect(mixed.status == 1)
                #expect(mixed.errors.contains("belongs to rack"), "\(mixed.errors)")
                let foreign = try await keyrackRun([
                    "rack", "add", "--operator", rack.operatorDirectory.path, "--nodes", all, "--add", stranger,
                ])
                #expect(foreign.status == 1)
                #expect(foreign.errors.contains("is configured for rack"), "\(foreign.errors)")
            }
        }
    }

    @Test("bench rack times a restart and a rotation of a real rack and prints JSON")
    func benchRack() async throws {
        let result = try await runToCompletion(
            try keyrackExecutable(), ["bench", "rack", "--nodes", "3", "--rounds", "1", "--json"])
        #expect(result.status == 0, "\(result.errors)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(object["nodes"] as? Int == 3)
        #expect((object["setup_s"] as? Double).map { $0 > 0 } == true)
        for key in ["unlock_after_last_start_s", "rotation_committed_on_all_s", "rotation_unlocked_on_all_s"] {
            let values = try #require(object[key] as? [Double], "\(key)")
            #expect(values.count == 1 && values[0] > 0, "\(key)")
        }
        let committed = try #require((object["rotation_committed_on_all_s"] as? [Double])?.first)
        let unlocked = try #require((object["rotation_unlocked_on_all_s"] as? [Double])?.first)
        #expect(committed <= unlocked)
        let bad = try await runToCompletion(try keyrackExecutable(), ["bench", "rack", "--nodes", "2"])
        #expect(bad.status != 0)
        #expect(bad.errors.contains("--nodes must be from 3 to 32"))
    }

    @Test("node run refuses a broken configuration with a clear error")
    func brokenConfiguration() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "keyrack-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("node.json")
        try Data(#"{"platform": "a:b", "colour": "blue"}"#.utf8).write(to: file)
        let result = try await runToCompletion(try keyrackExecutable(), ["node", "run", "--config", file.path])
        #expect(result.status == 2)
        #expect(result.errors.contains("unknown field 'colour'"))
    }
}
