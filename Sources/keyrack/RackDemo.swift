import ArgumentParser
import Foundation
import KeyrackCore
import KeyrackLab
import Logging
import NodeAgent
import SecretSharing
import TrustQuorum
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A whole rack on this machine: 5 node processes over attested mTLS, operator steps, and the KMS.",
        discussion: """
            With embedded defaults only (a throw-away manufacturing CA, software roots of \
            trust, a software TEE, everything on 127.0.0.1 under a temporary directory), \
            the demo starts 5 `keyrack node run` processes and shows: setting up the rack; \
            every node unlocking after a full restart; unlocking with two nodes down; a \
            rotation while one node is down, and its catch-up; adding a node; removing one \
            (it is then refused); and a node obtaining its storage key from the KMS with a \
            software-TEE quote. With cryptsetup installed, node 1's disk is a LUKS2 image: bound \
            in the first step, verified at every unlock and re-keyed at the rotation (without \
            it, the demo says what it skipped). No secret is printed: keys appear as short fingerprints. It \
            stops its processes and removes its files, and exits non-zero if a step fails.
            """
    )

    @Option(help: "Keep the rack's directory (configurations, ledgers, logs) here instead of a temporary one.")
    var keep: String?

    func run() async throws {
        let directory =
            keep.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-demo-\(UUID().uuidString)")
        // The in-process KMS's audit lines would interleave with the demo's own.
        bootstrapLogging(level: .warning)
        let demo = RackDemo(directory: directory, keep: keep != nil)
        let failure = await demo.run()
        if keep == nil { try? FileManager.default.removeItem(at: directory) }
        if let failure {
            writeStandardError("keyrack demo: \(failure)\n")
            throw ExitCode.failure
        }
    }
}

/// The demo's steps, each timed and summarised in the final table.
final class RackDemo {
    let directory: URL
    let out = DemoPrinter()
    var results: [(step: String, outcome: String, seconds: Double)] = []

    let keep: Bool
    /// Node 1's disk data0 as a LUKS2 image, when cryptsetup is installed.
    var luks: (image: String, cryptsetup: Cryptsetup)?
    static let luksPassphrase = SecretBytes(Array("demo passphrase".utf8))

    init(directory: URL, keep: Bool) {
        self.directory = directory
        self.keep = keep
    }

    /// Runs every step; returns why it failed, or nil.
    func run() async -> String? {
        out.say("Keyrack demo: a rack of 5 nodes on loopback, in \(directory.path)")
        let rack: LocalRack
        do {
            rack = try LocalRack(
                directory: directory.appendingPathComponent("rack"),
                executable: currentExecutable(),
                count: 6,
                policy: try demoAttestationPolicy(cache: directory.appendingPathComponent("measurements"))
            )
        } catch {
            return "cannot create the rack: \(error)"
        }
        // Interrupted (Ctrl-C, SIGTERM): stop the nodes and remove the files
        // before exiting. A child task watches the signals while this task
        // runs the steps; it is cancelled when they end.
        let registry = rack.processIdentifiers
        let root = directory
        let keep = keep
        let failure = await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                    registry.signalAll(SIGKILL)
                    if !keep { try? FileManager.default.removeItem(at: root) }
                    writeStandardError("keyrack demo: interrupted; stopped the nodes\n")
                    exit(130)
                }
            }
            let failure = await runSteps(rack)
            group.cancelAll()
            return failure
        }
        await rack.stopAll()
        printTable()
        if luks == nil {
            out.say("skipped: the LUKS2 volume steps (cryptsetup is not installed: apt-get install cryptsetup-bin)")
        }
        return failure
    }

    /// The steps proper, with the log tails of every node on a failure.
    private func runSteps(_ rack: LocalRack) async -> String? {
        out.say("A manufacturing CA, 6 device identities (Ed25519, software root of trust) and node configurations;")
        out.say("peers attest inside TLS with a measurement log signed by their root of trust, and the policy")
        out.say("(enforced) admits exactly this keyrack executable.")
        prepareLuks(rack)
        do {
            try await steps(rack)
            return nil
        } catch {
            out.say("FAILED: \(error)")
            for member in rack.members {
                let tail = rack.logTail(member.index, lines: 4)
                if !tail.isEmpty { out.say("--- \(member.platform) log tail ---\n\(tail)") }
            }
            return "\(error)"
        }
    }

    /// Makes node 1's disk data0 a LUKS2 image with a passphrase (bound to the rack in step 1), if cryptsetup is here.
    private func prepareLuks(_ rack: LocalRack) {
        let member = rack.members[0]
        let image = member.directory.appendingPathComponent("data0.img").path
        do {
            let cryptsetup = try Cryptsetup.locate(
                searchPath: testCryptsetupSearchPath() ?? Cryptsetup.defaultSearchPath)
            guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, 32 << 20) == 0 else {
                throw CommandFailure("cannot create \(image)")
            }
            try cryptsetup.format(image, key: Self.luksPassphrase)
            var configuration = member.configuration
            // No device-mapper needed: the demo verifies the key instead of opening the mapping.
            configuration.volumes = [LuksVolume(disk: "data0", device: image, open: false)]
            try configuration.json().write(to: URL(fileURLWithPath: member.configurationFile))
            luks = (image, cryptsetup)
            out.say("Node 1's disk data0 is a 32 MiB LUKS2 image with a passphrase (\(image));")
            out.say("it is verified, not mapped (\"open\": false): a real machine opens /dev/mapper/<name>.")
        } catch {
            out.say("The LUKS2 steps are skipped: \(error)")
        }
    }

    /// Binds node 1's LUKS2 image (authorised by its passphrase); a sentence for the step's outcome.
    private func bindLuks(_ rack: LocalRack) async throws -> String {
        guard let luks else { return "" }
        let response = try await AdminSocket.call(
            AdminRequest(
                .luksBind, disk: "data0",
                existingKey: Data(Self.luksPassphrase.unsafeCopiedBytes).base64EncodedString()),
            path: rack.members[0].socket, timeout: .seconds(120))
        if let error = response.error { throw CommandFailure("luks-bind: \(error)") }
        let volume = try await luksVolume(rack)
        guard volume.state == .verified, let epoch = volume.epoch else {
            throw CommandFailure("node 1's LUKS2 image is \(volume.state.rawValue) after luks-bind")
        }
        let slots = try luks.cryptsetup.metadata(luks.image).keyslots.sorted()
        return "; node 1's LUKS2 image bound under epoch \(epoch) (keyslots \(slots): passphrase and rack key)"
    }

    private func luksVolume(_ rack: LocalRack) async throws -> VolumeStatus {
        guard let volume = await rack.statuses([0])[0]?.volumes.first(where: { $0.disk == "data0" }) else {
            throw CommandFailure("node 1 does not report its LUKS2 volume")
        }
        return volume
    }

    /// Waits until node 1's LUKS2 image is verified under `epoch`; a sentence for the step's outcome.
    private func luksVerified(_ rack: LocalRack, at epoch: Epoch, rekeyedFrom old: Epoch? = nil) async throws -> String
    {
        guard let luks else { return "" }
        try await rack.waitUntil([0], "LUKS2 image verified under epoch \(epoch)") { status in
            status.volumes.contains { $0.disk == "data0" && $0.state == .verified && $0.epoch == epoch }
        }
        guard let old else { return "; node 1's LUKS2 image verified at unlock with epoch \(epoch)'s key" }
        let response = try await AdminSocket.perform(
            AdminRequest(.diskKey, epoch: old, disk: "data0"), path: rack.members[0].socket)
        guard let hex = response.key, let oldKey = SecretBytes(hex: hex) else {
            throw CommandFailure("node 1 gave no disk key")
        }
        guard try luks.cryptsetup.test(luks.image, key: oldKey) == nil else {
            throw CommandFailure("epoch \(old)'s key still opens node 1's LUKS2 image")
        }
        return "; node 1's LUKS2 image re-keyed \(old)→\(epoch) (the old key no longer opens it)"
    }

    private func step(_ name: String, _ body: () async throws -> String) async throws {
        out.say()
        out.say("== \(name)")
        let start = ContinuousClock.now
        do {
            let outcome = try await body()
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            out.say("   ✓ \(outcome) (\(String(format: "%.2f", seconds)) s)")
            results.append((name, outcome, seconds))
        } catch {
            results.append((name, "FAILED: \(error)", 0))
            throw error
        }
    }

    private func printTable() {
        out.say()
        let width = max(4, results.map(\.step.count).max() ?? 0)
        out.say("step".padding(toLength: width, withPad: " ", startingAt: 0) + "  seconds  result")
        for result in results {
            out.say(
                result.step.padding(toLength: width, withPad: " ", startingAt: 0)
                    + String(format: "  %7.2f  ", result.seconds) + result.outcome)
        }
    }

    private func operatorFor(_ rack: LocalRack, _ indices: [Int]) throws -> RackOperator {
        let printer = out
        return try rack.rackOperator(indices) { line in printer.say("   " + line) }
    }

    private func steps(_ rack: LocalRack) async throws {
        let first = [0, 1, 2, 3, 4]
        var epoch = Epoch(0)
        var diskKey = ""
        try await step("1. set up the rack") {
            out.say("   starting 5 node processes (node 6 is kept for later)")
            out.say(
                "   the operator identity (keyrack operator init) signs every ticket and commit; each node pins its CA")
            for index in first { try rack.launch(index) }
            for index in first { try await rack.waitUntilAnswering(index) }
            let committed = try await operatorFor(rack, first).run(.initialize, threshold: 3)
            epoch = committed.epoch
            try await rack.waitUntil(first, "unlocked") { $0.unlockedEpoch == committed.epoch }
            diskKey = try await keyFingerprint(rack, 0, "data0")
            let bound = try await bindLuks(rack)
            return "epoch \(epoch), N=5, K=3; all 5 unlocked; node 1's data0 key \(diskKey)\(bound)"
        }
        try await step("2. full restart") {
            out.say("   stopping all 5 nodes (as in a power cut), then starting them again")
            await rack.stopAll()
            for index in first { try rack.launch(index) }
            try await rack.waitUntil(first, "unlocked after the restart") { $0.unlockedEpoch == epoch }
            let again = try await keyFingerprint(rack, 0, "data0")
            guard again == diskKey else { throw CommandFailure("the disk key changed across the restart") }
            let verified = try await luksVerified(rack, at: epoch)
            return "all 5 unlocked from each other's shares; node 1's data0 key is again \(again)\(verified)"
        }
        try await step("3. two nodes down") {
            out.say("   nodes 4 and 5 stay down; nodes 1-3 restart and gather K=3 shares among themselves")
            await rack.stopAll()
            for index in [0, 1, 2] { try rack.launch(index) }
            try await rack.waitUntil([0, 1, 2], "unlocked with two nodes down") { $0.unlockedEpoch == epoch }
            return "nodes 1-3 unlocked at epoch \(epoch) with nodes 4 and 5 down"
        }
        try await step("4. rotation with node 5 down, then its catch-up") {
            try await rack.start(3)
            var rotation = try operatorFor(rack, first)
            rotation.waitForDownMembers = .zero
            let rotated = try await rotation.run(.rotate)
            let before = epoch
            epoch = rotated.epoch
            try await rack.waitUntil([0, 1, 2, 3], "unlocked at the new epoch") { $0.unlockedEpoch == epoch }
            out.say("   node 5 comes back: it asks for shares of its old epoch and is sent the new configuration")
            try await rack.start(4)
            let caughtUp = try await rack.waitUntil([4], "caught up") { $0.unlockedEpoch == epoch }
            let rekey = caughtUp[0].rekey.map(\.summary).joined(separator: ", ")
            let rekeyed = try await luksVerified(rack, at: epoch, rekeyedFrom: before)
            return "epoch \(epoch) committed without node 5; node 5 caught up and unlocked; re-key: \(rekey)\(rekeyed)"
        }
        try await step("5. add node 6") {
            try await rack.start(5)
            let grown = try await operatorFor(rack, first).run(.add([rack.members[5].socket]))
            epoch = grown.epoch
            try await rack.waitUntil(Array(0...5), "unlocked with node 6") { $0.unlockedEpoch == epoch }
            return "epoch \(epoch), N=\(grown.memberCount), K=\(grown.threshold); all 6 unlocked"
        }
        try await step("6. remove node 2") {
            let removed = rack.members[1].platform
            let shrunk = try await operatorFor(rack, Array(0...5)).run(.remove([removed]))
            epoch = shrunk.epoch
            let remaining = [0, 2, 3, 4, 5]
            try await rack.waitUntil(remaining, "unlocked without node 2") { $0.unlockedEpoch == epoch }
            out.say("   the operator tells node 2, with the signed configuration; its peers now refuse its certificate")
            await rack.stop(1)
            try await rack.start(1)
            let refused = try await rack.waitUntil([1], "told it was expunged") { $0.expunged != nil }
            guard refused[0].unlockedEpoch == nil else { throw CommandFailure("the removed node unlocked") }
            let connected = try await rack.waitUntil(remaining, "without node 2") {
                !$0.connected.contains(removed)
            }
            guard connected.allSatisfy({ !$0.connected.contains(removed) }) else {
                throw CommandFailure("a member still holds a channel to the removed node")
            }
            return
                "epoch \(epoch), N=\(shrunk.memberCount); node 2 refused (expunged at epoch \(refused[0].expunged.map { "\($0.epoch)" } ?? "?"), no channel to the others)"
        }
        try await step("7. storage key from the KMS") {
            var printer = out
            return try await runKeyReleaseDemo(in: rack.directory.appendingPathComponent("kms"), out: &printer)
        }
    }

    private func keyFingerprint(_ rack: LocalRack, _ index: Int, _ disk: String) async throws -> String {
        let response = try await AdminSocket.perform(
            AdminRequest(.diskKey, disk: disk),
            path: rack.members[index].socket
        )
        guard let hex = response.key, let key = SecretBytes(hex: hex) else {
            throw CommandFailure("node \(index + 1) gave no disk key")
        }
        return fingerprint(key)
    }
}

/// The path of the running `keyrack` executable.
func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// The attestation policy of the demo rack, enforced: it admits the
/// software-RoT evidence of the running executable and nothing else.
func demoAttestationPolicy(cache: URL) throws -> Data {
    Data(NodeAttestationPolicy.json(allowing: try MeasurementLog.current(cacheDirectory: cache)).utf8)
}
