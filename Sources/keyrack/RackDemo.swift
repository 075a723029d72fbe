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

            With --hosts, every node runs on a host of its own — a Linux network namespace on \
            10.77.0.0/24, joined by a bridge in a namespace of its own, so nothing touches this \
            machine's network — and the operator's commands run as `keyrack rack …` on another \
            host (10.77.0.2) over the nodes' network admin API (mutual TLS with the operator \
            certificate). The rotation step then cuts node 5's host off the network during the \
            rotation (ip link set … down), and heals it: node 5 catches up on its own. It needs \
            root and `ip` from iproute2, and says so when either is missing. The namespaces are \
            deleted when the demo ends, however it ends.
            """
    )

    @Option(help: "Keep the rack's directory (configurations, ledgers, logs) here instead of a temporary one.")
    var keep: String?
    @Flag(help: "Run every node on a host of its own (network namespaces; needs root and iproute2).")
    var hosts = false

    func run() async throws {
        let directory =
            keep.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-demo-\(UUID().uuidString)")
        // The in-process KMS's audit lines would interleave with the demo's own.
        bootstrapLogging(level: .warning)
        if hosts, let missing = HostLab.requirements() {
            writeStandardError(
                "keyrack demo --hosts: \(missing). The plain `keyrack demo` runs the same story on loopback.\n")
            throw ExitCode.failure
        }
        let demo = RackDemo(directory: directory, keep: keep != nil, hosts: hosts)
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
    /// Whether every node runs on a host of its own, and the operator on another.
    let separateHosts: Bool
    /// The network namespaces, with --hosts.
    var lab: HostLab?
    /// The operator's host, with --hosts.
    var operatorHost: HostLab.Host?
    /// Node 1's disk data0 as a LUKS2 image, when cryptsetup is installed.
    var luks: (image: String, cryptsetup: Cryptsetup)?
    static let luksPassphrase = SecretBytes(Array("demo passphrase".utf8))

    init(directory: URL, keep: Bool, hosts: Bool = false) {
        self.directory = directory
        self.keep = keep
        self.separateHosts = hosts
    }

    /// Runs every step; returns why it failed, or nil.
    func run() async -> String? {
        let rack: LocalRack
        do {
            if separateHosts {
                let lab = try HostLab()
                self.lab = lab
                operatorHost = try lab.addHost("op", octet: 2)
                out.say(
                    "Keyrack demo: a rack of 5 nodes, each on a host of its own (network namespaces on "
                        + "\(lab.subnet).0/24), the operator on \(lab.subnet).2; files in \(directory.path)")
            } else {
                out.say("Keyrack demo: a rack of 5 nodes on loopback, in \(directory.path)")
            }
            rack = try LocalRack(
                directory: directory.appendingPathComponent("rack"),
                executable: currentExecutable(),
                count: 6,
                policy: try demoAttestationPolicy(cache: directory.appendingPathComponent("measurements")),
                hosts: lab
            )
        } catch {
            lab?.destroy()
            return "cannot create the rack: \(error)"
        }
        // Interrupted (Ctrl-C, SIGTERM): stop the nodes and remove the files
        // before exiting. A child task watches the signals while this task
        // runs the steps; it is cancelled when they end.
        let registry = rack.processIdentifiers
        let root = directory
        let keep = keep
        let lab = lab
        let failure = await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                    registry.signalAll(SIGKILL)
                    lab?.destroy()
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
        lab?.destroy()
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

    /// What the demo asks of the operator.
    enum Change {
        case initialize(threshold: Int)
        /// A rotation; `waitForDown`: seconds to keep delivering the commit to members that do not answer.
        case rotate(waitForDown: Int)
        case add(Int)
        case remove(Int)
    }

    /// Carries out `change` over the nodes `indices`: in this process over
    /// their admin sockets, or with --hosts as `keyrack rack …` on the
    /// operator's host over their network admin addresses.
    /// With --hosts, `meanwhile` runs while the command does (the partition step heals the network then).
    private func operate(
        _ rack: LocalRack, _ indices: [Int], _ change: Change, meanwhile: (() async throws -> Void)? = nil
    ) async throws -> (epoch: Epoch, members: Int, threshold: Int) {
        let printer = out
        guard let lab, let operatorHost else {
            var rackOperator = try rack.rackOperator(indices) { line in printer.say("   " + line) }
            let goal: RackOperator.Goal
            var threshold: Int?
            switch change {
            case .initialize(let k):
                goal = .initialize
                threshold = k
            case .rotate(let wait):
                goal = .rotate
                rackOperator.waitForDownMembers = .seconds(wait)
            case .add(let index): goal = .add([rack.members[index].socket])
            case .remove(let index): goal = .remove([rack.members[index].platform])
            }
            let committed = try await rackOperator.run(goal, threshold: threshold)
            return (committed.epoch, committed.memberCount, committed.threshold)
        }
        var arguments = ["rack"]
        switch change {
        case .initialize(let k): arguments += ["init", "--threshold", "\(k)"]
        case .rotate(let wait): arguments += ["rotate", "--wait-for-down", "\(wait)"]
        case .add(let index): arguments += ["add", "--add", rack.endpoints([index])[0]]
        case .remove(let index): arguments += ["remove", "--remove", rack.members[index].platform.description]
        }
        out.say("   on the operator's host \(operatorHost.address): keyrack \(arguments.joined(separator: " "))")
        arguments += [
            "--nodes", rack.endpoints(indices).joined(separator: ","), "--operator", rack.operatorDirectory.path,
        ]
        let (status, output) = try await run(in: operatorHost, lab, arguments, rack: rack, meanwhile: meanwhile)
        for line in output.split(separator: "\n") { out.say("     " + line) }
        guard status == 0 else { throw CommandFailure("keyrack \(arguments[0]) \(arguments[1]) exited \(status)") }
        // "done: epoch E, N members, threshold K"
        guard let done = output.split(separator: "\n").last(where: { $0.hasPrefix("done: epoch ") }) else {
            throw CommandFailure("keyrack \(arguments[1]) did not say what it committed")
        }
        let numbers = done.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard numbers.count == 3 else { throw CommandFailure("cannot read \"\(done)\"") }
        return (Epoch(UInt64(numbers[0])), numbers[1], numbers[2])
    }

    /// Runs `keyrack arguments` on `host` to completion (at most two
    /// minutes); its exit status and its output and errors together.
    private func run(
        in host: HostLab.Host, _ lab: HostLab, _ arguments: [String], rack: LocalRack,
        meanwhile: (() async throws -> Void)?
    ) async throws -> (Int32, String) {
        let (ip, wrapped) = lab.command(in: host, currentExecutable(), arguments)
        let capture = rack.directory.appendingPathComponent("operator-\(UUID().uuidString).out")
        guard FileManager.default.createFile(atPath: capture.path, contents: nil) else {
            throw CommandFailure("cannot create \(capture.path)")
        }
        defer { try? FileManager.default.removeItem(at: capture) }
        let handle = try FileHandle(forWritingTo: capture)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = wrapped
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? handle.close()
        rack.processIdentifiers.insert(process.processIdentifier)
        defer { rack.processIdentifiers.remove(process.processIdentifier) }
        do {
            try await meanwhile?()
        } catch {
            process.terminate()
            throw error
        }
        let deadline = ContinuousClock.now + .seconds(120)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            process.terminate()
            throw CommandFailure("keyrack \(arguments.prefix(2).joined(separator: " ")) took over two minutes")
        }
        let output = String(decoding: (try? Data(contentsOf: capture)) ?? Data(), as: UTF8.self)
        return (process.terminationStatus, output)
    }

    private func steps(_ rack: LocalRack) async throws {
        let first = [0, 1, 2, 3, 4]
        var epoch = Epoch(0)
        var diskKey = ""
        try await step("1. set up the rack") {
            out.say("   starting 5 node processes (node 6 is kept for later)")
            out.say(
                "   the operator identity (keyrack operator init) signs every ticket and commit; each node pins its CA")
            if let lab {
                out.say(
                    "   node i listens on its own host, \(lab.subnet).\(LocalRack.firstNodeOctet)+i-1, for peers and for the admin API"
                )
            }
            for index in first { try rack.launch(index) }
            for index in first { try await rack.waitUntilAnswering(index) }
            let committed = try await operate(rack, first, .initialize(threshold: 3))
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
        if let lab {
            try await step("4. rotation with node 5 partitioned, then the heal and its catch-up") {
                try await rack.start(3)
                try await rack.start(4)
                try await rack.waitUntil(first, "unlocked") { $0.unlockedEpoch == epoch }
                let cut = try requireHost(rack, 4)
                out.say(
                    "   node 5's host \(cut.address) is cut off the network (ip link set … down) during the rotation")
                try lab.partition(cut)
                let before = epoch
                var healed = false
                defer { if !healed { try? lab.heal(cut) } }
                // The operator commits with K + Z = 4 reachable and keeps delivering the commit to node 5
                // (--wait-for-down) while, on this side, the rack moves on and the partition heals.
                let rotated = try await operate(rack, first, .rotate(waitForDown: 60)) {
                    let moved = try await rack.waitUntil([0, 1, 2, 3], timeout: .seconds(60), "at a new epoch") {
                        ($0.unlockedEpoch ?? before) > before
                    }
                    let behind = await rack.statuses([4])[0]
                    guard behind?.committedEpoch == before else {
                        throw CommandFailure("the partitioned node 5 committed an epoch it could not have heard of")
                    }
                    let now = moved[0].unlockedEpoch ?? before
                    self.out.say("   nodes 1-4 unlocked epoch \(now); node 5, cut off, is still at epoch \(before)")
                    self.out.say("   healed: the operator reaches node 5 again and delivers the commit")
                    try lab.heal(cut)
                    healed = true
                }
                epoch = rotated.epoch
                let caughtUp = try await rack.waitUntil([4], timeout: .seconds(60), "caught up") {
                    $0.unlockedEpoch == epoch
                }
                let rekey = caughtUp[0].rekey.map(\.summary).joined(separator: ", ")
                let rekeyed = try await luksVerified(rack, at: epoch, rekeyedFrom: before)
                return
                    "epoch \(epoch) committed with node 5 partitioned; healed, node 5 caught up and unlocked; re-key: \(rekey)\(rekeyed)"
            }
        } else {
            try await step("4. rotation with node 5 down, then its catch-up") {
                try await rack.start(3)
                let rotated = try await operate(rack, first, .rotate(waitForDown: 0))
                let before = epoch
                epoch = rotated.epoch
                try await rack.waitUntil([0, 1, 2, 3], "unlocked at the new epoch") { $0.unlockedEpoch == epoch }
                out.say("   node 5 comes back: it asks for shares of its old epoch and is sent the new configuration")
                try await rack.start(4)
                let caughtUp = try await rack.waitUntil([4], "caught up") { $0.unlockedEpoch == epoch }
                let rekey = caughtUp[0].rekey.map(\.summary).joined(separator: ", ")
                let rekeyed = try await luksVerified(rack, at: epoch, rekeyedFrom: before)
                return
                    "epoch \(epoch) committed without node 5; node 5 caught up and unlocked; re-key: \(rekey)\(rekeyed)"
            }
        }
        try await step("5. add node 6") {
            try await rack.start(5)
            let grown = try await operate(rack, first, .add(5))
            epoch = grown.epoch
            try await rack.waitUntil(Array(0...5), "unlocked with node 6") { $0.unlockedEpoch == epoch }
            return "epoch \(epoch), N=\(grown.members), K=\(grown.threshold); all 6 unlocked"
        }
        try await step("6. remove node 2") {
            let removed = rack.members[1].platform
            let shrunk = try await operate(rack, Array(0...5), .remove(1))
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
                "epoch \(epoch), N=\(shrunk.members); node 2 refused (expunged at epoch \(refused[0].expunged.map { "\($0.epoch)" } ?? "?"), no channel to the others)"
        }
        try await step("7. storage key from the KMS") {
            var printer = out
            return try await runKeyReleaseDemo(in: rack.directory.appendingPathComponent("kms"), out: &printer)
        }
    }

    private func requireHost(_ rack: LocalRack, _ index: Int) throws -> HostLab.Host {
        guard let host = rack.members[index].host else { throw CommandFailure("node \(index + 1) has no host") }
        return host
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
