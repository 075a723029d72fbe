import Crypto
import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// Policy updates while the rack runs: `keyrack rack policy set` and SIGHUP,
/// and a rolling upgrade of every node to another executable.
@Suite("Rolling upgrades: measurement policies distributed and reloaded while the rack runs")
struct RollingUpgradeTests {
    /// A copy of the `keyrack` under test with one byte appended: another
    /// measurement, the same program.
    static func nextBuild(in rack: LocalRack) throws -> (path: String, digest: String) {
        let next = rack.directory.appendingPathComponent("keyrack-next")
        var program = try Data(contentsOf: try keyrackExecutable())
        program.append(0)
        try program.write(to: next)
        #expect(chmod(next.path, 0o755) == 0)
        return (next.path, Array(SHA256.hash(data: program)).hexString)
    }

    static func digest(ofFile path: String) throws -> String {
        Array(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: path)))).hexString
    }

    /// `keyrack rack policy …` with the rack's nodes and operator.
    static func policy(_ rack: LocalRack, _ arguments: [String]) async throws -> (
        status: Int32, output: String, errors: String
    ) {
        try await runToCompletion(
            try keyrackExecutable(),
            ["rack", "policy"] + arguments + [
                "--nodes", rack.sockets().joined(separator: ","), "--operator", rack.operatorDirectory.path,
            ])
    }

    /// `keyrack rack policy print …` into `name` in the rack's directory.
    static func printPolicy(_ rack: LocalRack, _ name: String, _ arguments: [String]) async throws -> String {
        let printed = try await runToCompletion(try keyrackExecutable(), ["rack", "policy", "print"] + arguments)
        #expect(printed.status == 0, "\(printed.errors)")
        let path = rack.directory.appendingPathComponent(name).path
        try Data(printed.output.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("every node moves to another executable, one at a time, while the rack unlocks and rotates")
    func rollingUpgrade() async throws {
        try await withRack(count: 5) { rack in
            let all = Array(0..<5)
            var latest = try await setUp(rack, all, threshold: 3)
            let old = try Self.digest(ofFile: try keyrackExecutable().path)
            let next = try Self.nextBuild(in: rack)
            let both = try await Self.printPolicy(
                rack, "both.json", ["--from", rack.policyFile.path, "--executable", next.path])
            let onlyNext = try await Self.printPolicy(rack, "next.json", ["--executable", next.path])

            // The policy admitting old and new, on every node, without a restart.
            let first = try await Self.policy(rack, ["set", "--file", both])
            #expect(first.status == 0, "\(first.output)\(first.errors)")
            #expect(first.output.contains("done: version 1 in force on all 5 nodes"))
            for status in try await rack.waitUntil(all, "on policy version 1", { $0.policy?.version == 1 }) {
                #expect(status.policy?.source == .operator)
                #expect(status.policy?.signedBy == "lab operator")
                #expect(status.unlockedEpoch == latest.epoch, "the policy update cost \(status.platform) its unlock")
            }
            // Setting it again changes nothing: the same version everywhere.
            let again = try await Self.policy(rack, ["set", "--file", both])
            #expect(again.status == 0 && again.output.contains("already in force"), "\(again.output)")

            for index in all {
                await rack.stop(index)
                try await rack.start(index, executable: next.path)
                try await rack.waitUntil([index], "unlocked after its upgrade") { $0.unlockedEpoch == latest.epoch }
                latest = try await rack.rackOperator().run(.rotate)
                try await rack.waitUntil(all, "unlocked") { $0.unlockedEpoch == latest.epoch }
                try await expectSameSecret(rack, all)
                guard index == 2 else { continue }
                // Midway, dropping the old build is refused by the nodes that still run it, and by no other:
                // nothing is applied anywhere.
                let early = try await Self.policy(rack, ["set", "--file", onlyNext])
                #expect(early.status == 1)
                let lines = early.output.split(separator: "\n")
                for member in rack.members {
                    let line = try #require(lines.first { $0.hasPrefix(member.platform.description) })
                    if member.index <= 2 {
                        #expect(line.contains("accepts it, not applied"), "\(line)")
                    } else {
                        #expect(line.contains("REFUSED") && line.contains("own software"), "\(line)")
                        #expect(line.contains("executable") && line.contains(old), "\(line)")
                    }
                }
                for status in await rack.statuses(all) { #expect(status?.policy?.version == 1) }
            }

            // Every node runs the new build: the old one can go.
            let last = try await Self.policy(rack, ["set", "--file", onlyNext])
            #expect(last.status == 0, "\(last.output)\(last.errors)")
            #expect(last.output.contains("done: version 2 in force on all 5 nodes"))
            latest = try await rack.rackOperator().run(.rotate)
            try await rack.waitUntil(all, "unlocked") { $0.unlockedEpoch == latest.epoch }

            // A restart keeps the signed policy (the node's policy file still names the old build only).
            await rack.stop(0)
            try await rack.start(0, executable: next.path)
            let restarted = try await rack.waitUntil([0], "unlocked") { $0.unlockedEpoch == latest.epoch }
            #expect(restarted[0].policy?.version == 2)

            // The old build is refused by its peers now, naming the measurement.
            let logStart = (try? Data(contentsOf: URL(fileURLWithPath: rack.members[4].logFile)))?.count ?? 0
            await rack.stop(4)
            try await rack.start(4)
            let deadline = ContinuousClock.now + .seconds(30)
            func newLog() -> String {
                let data = (try? Data(contentsOf: URL(fileURLWithPath: rack.members[4].logFile))) ?? Data()
                return String(decoding: data.dropFirst(logStart), as: UTF8.self)
            }
            while !newLog().contains("refused"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(newLog().contains("measurement 'executable'") && newLog().contains(old))
            let refused = try #require(await rack.statuses([4])[0])
            #expect(refused.unlockedEpoch == nil && refused.connected.isEmpty)
            #expect(refused.policy?.version == 2)
            let show = try await Self.policy(rack, ["show", "--json"])
            #expect(show.status == 0, "\(show.errors)")
            struct Row: Decodable {
                let platform: String?
                let policy: NodePolicyState?
            }
            let rows = try JSONDecoder().decode([Row].self, from: Data(show.output.utf8))
            #expect(rows.map { $0.policy?.version } == Array(repeating: 2, count: 5))
        }
    }

    @Test("SIGHUP reads the policy file again: a node refused for its build is admitted without a restart")
    func reloadOnHangup() async throws {
        try await withRack(count: 3) { rack in
            let all = Array(0..<3)
            let committed = try await setUp(rack, all, threshold: 2)
            let next = try Self.nextBuild(in: rack)
            await rack.stop(2)
            try await rack.start(2, executable: next.path)
            // Its peers (and their file policy) refuse it, naming its digest.
            let deadline = ContinuousClock.now + .seconds(30)
            while !rack.logTail(2, lines: 60).contains(next.digest), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(rack.logTail(2, lines: 60).contains(next.digest))
            #expect(try #require(await rack.statuses([2])[0]).unlockedEpoch == nil)
            // The file admits it too now; SIGHUP to the two old nodes (the new one has the new file already).
            let before = try #require(await rack.statuses([0])[0]?.policy)
            let both = try await Self.printPolicy(
                rack, "both.json", ["--from", rack.policyFile.path, "--executable", next.path])
            try FileManager.default.removeItem(at: rack.policyFile)
            try FileManager.default.copyItem(atPath: both, toPath: rack.policyFile.path)
            rack.signal(0, SIGHUP)
            rack.signal(1, SIGHUP)
            let reloaded = try await rack.waitUntil(all, timeout: .seconds(45), "unlocked") {
                $0.unlockedEpoch == committed.epoch
            }
            #expect(reloaded[0].policy?.source == .file)
            #expect(reloaded[0].policy?.digest == (try Self.digest(ofFile: both)))
            #expect(reloaded[0].policy?.digest != before.digest)
            #expect(rack.logTail(0, lines: 80).contains("reloaded the measurement policy file"))
        }
    }

    @Test("a policy from a stranger, for another rack, or that is not JSON never reaches a node")
    func refusals() async throws {
        try await withRack(count: 3) { rack in
            let all = Array(0..<3)
            _ = try await setUp(rack, all, threshold: 2)
            let notJSON = rack.directory.appendingPathComponent("not.json")
            try Data("mode: enforce".utf8).write(to: notJSON)
            let bad = try await Self.policy(rack, ["set", "--file", notJSON.path])
            #expect(bad.status == 1 && bad.errors.contains("not a JSON object"), "\(bad.errors)")
            let missing = try await Self.policy(rack, ["set", "--file", "/nonexistent/policy.json"])
            #expect(missing.status == 1 && missing.errors.contains("cannot read the policy file"))
            // A stranger's signature, straight to a node's admin socket.
            let stranger = rack.directory.appendingPathComponent("stranger")
            let ca = try ManufacturingCA.create(in: stranger.appendingPathComponent("ca"))
            let mallory = try OperatorIdentity.create(in: stranger.appendingPathComponent("op"), ca: ca, name: "m")
            let permissive = Data("{\"mode\":\"permissive\",\"softwareRootOfTrust\":{\"allow\":{}}}".utf8)
            let forged = try mallory.sign(policy: permissive, rackId: rack.rackId, version: 1)
            let error = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(AdminRequest(.setPolicy, policy: forged), path: rack.members[0].socket)
            }
            #expect(error?.code == .policyRefused)
            // The request without its policy is malformed.
            let empty = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(AdminRequest(.setPolicy), path: rack.members[0].socket)
            }
            #expect(empty?.code == .request)
            for status in await rack.statuses(all) {
                #expect(status?.policy?.source == .file && status?.attestationEnforced == true)
            }
        }
    }
}
