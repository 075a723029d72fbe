import ArgumentParser
import Dispatch
import Foundation
import Logging
import NodeAgent
import ServiceLifecycle
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run one trust-quorum node, and ask it for its disk keys.",
        subcommands: [
            Run.self, Status.self, DiskKeyCommand.self, DiskRekeyedCommand.self, LuksBindCommand.self,
            LuksFormatCommand.self, WaitVolumesCommand.self,
        ]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a node: attested mTLS channels to its peers, the ledger, and the admin socket.",
            discussion: """
                The configuration file (JSON) names the platform id, rack id, device identity \
                (key, certificate, intermediate, root, the operator CA whose signatures every \
                reconfiguration and commit must carry, denied device serials), listen address, peers' addresses, the two \
                ledger directories, the admin socket, the attestation policy and evidence, and the \
                disks. See the NodeAgent documentation for its format. The node unlocks (loads the \
                rack secret of its latest committed epoch) as soon as enough peers answer, and logs \
                to standard error. SIGTERM or SIGINT stops it; its state is on disk at every step. \
                SIGHUP reads the denied device serials (identity.deniedSerials) and the \
                attestation policy file again; peers are re-attested against a changed policy \
                without a restart.

                The operator can also distribute the measurement policy, signed, with \
                `keyrack rack policy set`: the node checks the signature (the operator CA), the \
                rack id and that the version only goes up, keeps the signed copy beside its ledger \
                (node-policy.json) and uses it from then on, at every start too, instead of the file.

                The root of trust records the highest ledger generation written. A node whose \
                ledger is older than that (restored from an old copy) or gone (both directories \
                empty) refuses to start; --reinitialise starts it, once, as a new node with no \
                share (the operator's next commit, `keyrack rack rotate`, gives it one), and only \
                when no ledger copy exists.
                """
        )
        @Option(help: "The node's configuration file (JSON).") var config: String
        @Flag(
            help: """
                Start as a new node although this node's root of trust says it was initialised: \
                for a node whose ledger is lost for good. Refused while a ledger copy exists.
                """)
        var reinitialise = false
        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"

        func run() async throws {
            guard let level = Logger.Level(rawValue: logLevel) else {
                writeStandardError(
                    "keyrack: --log-level must be one of trace, debug, info, notice, warning, error, critical\n")
                throw ExitCode(2)
            }
            let configuration: NodeConfiguration
            do {
                configuration = try NodeConfiguration(contentsOf: config)
            } catch {
                writeStandardError("keyrack: \(config): \(error)\n")
                throw ExitCode(2)
            }
            // Everything this process creates (admin socket, ledger) is private to its owner.
            umask(0o077)
            bootstrapLogging(level: level)
            let logger = Logger(label: "keyrack.node.\(configuration.platform)")
            // The crash-test hook exists in debug builds only: a release binary has no kill switch.
            #if DEBUG
                let crashHook = ProcessInfo.processInfo.environment["KEYRACK_TEST_CRASH_AFTER_PERSIST"].flatMap {
                    Int($0)
                }
                var volumeOptions = VolumeOptions()
                if let step = ProcessInfo.processInfo.environment["KEYRACK_TEST_CRASH_AFTER_REKEY_STEP"]
                    .flatMap(RekeyPlan.Step.init(rawValue:))
                {
                    volumeOptions.afterStep = { taken in
                        guard taken == step else { return false }
                        logger.critical("test hook: crashing right after re-key step \(taken.rawValue)")
                        kill(getpid(), SIGKILL)
                        return true
                    }
                }
                volumeOptions.cryptsetupSearchPath = testCryptsetupSearchPath()
            #else
                let crashHook: Int? = nil
                let volumeOptions = VolumeOptions()
            #endif
            let runtime: NodeRuntime
            do {
                runtime = try await NodeRuntime.open(
                    configuration: configuration,
                    logger: logger,
                    crashAfterPersist: crashHook,
                    volumeOptions: volumeOptions,
                    reinitialise: reinitialise
                )
            } catch {
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(1)
            }
            // SIGHUP reads the denied device certificates and the policy file again.
            signal(SIGHUP, SIG_IGN)
            let hangup = DispatchSource.makeSignalSource(signal: SIGHUP)
            let file = config
            hangup.setEventHandler {
                Task {
                    await runtime.reloadDeniedSerials(from: file)
                    await runtime.reloadPolicyFile()
                }
            }
            hangup.resume()
            defer { hangup.cancel() }
            // One ServiceGroup per process: SIGTERM or SIGINT shuts the node down gracefully.
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: runtime)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                ))
            do {
                try await group.run()
            } catch {
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(1)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one node's status as JSON.")
        @OptionGroup var node: AdminSocketOption

        func run() async throws {
            try await reportingAsyncFailures {
                let response = try await node.perform(AdminRequest(.status))
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try writeStandardOutput(String(decoding: try encoder.encode(response.status), as: UTF8.self) + "\n")
            }
        }
    }

    struct DiskKeyCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "disk-key",
            abstract: "Print a disk's key, from the node's admin socket (or its network admin API, if it allows).",
            discussion: """
                For `cryptsetup open --key-file=-` use --raw (32 bytes); the default is 64 hex \
                digits, as `zfs load-key` with keyformat=hex reads them. --epoch gives an older \
                epoch's key, to re-key a disk after a commit (`keyrack rack status` lists them).

                Keys are derived from the rack secret, this node's platform id and the disk id, \
                so a disk of the same name has another key on every node. A disk keyed by an \
                earlier release, whose keys did not include the platform id, is listed as \
                `data0 3(v1)→3`: --key-scheme 1 gives its old key (only while the disk is keyed \
                under it) to re-key it from; then `keyrack node disk-rekeyed`. LUKS2 volumes the \
                node manages are re-keyed by the node itself.

                Over the network (--admin ADDR:PORT --operator DIR) a node answers only when its \
                configuration sets "allowNetworkDiskKey": true; otherwise NODE-ADMIN-FORBIDDEN.
                """
        )
        @OptionGroup var node: AdminSocketOption
        @Option(help: "The disk id (one of the node's configured disks).") var disk: String
        @Option(help: "The epoch (default: the latest committed).") var epoch: UInt64?
        @Option(
            help: """
                The key derivation: 2 (default, with the platform id) or 1 (an earlier release's, \
                only for a disk still keyed under it).
                """)
        var keyScheme: Int = DiskKeyScheme.current.rawValue
        @Flag(help: "Write the 32 raw key bytes instead of hex.") var raw = false

        func validate() throws {
            guard DiskKeyScheme(rawValue: keyScheme) != nil else {
                throw ValidationError("--key-scheme must be 1 or 2")
            }
        }

        func run() async throws {
            try await reportingAsyncFailures {
                let scheme = DiskKeyScheme(rawValue: keyScheme) ?? .current
                let response = try await node.perform(
                    AdminRequest(
                        .diskKey, epoch: epoch.map { Epoch($0) }, disk: disk,
                        keyScheme: scheme == .current ? nil : scheme))
                guard let hex = response.key, var key = [UInt8](hex: hex) else {
                    throw CommandFailure("the node answered without a key")
                }
                defer { for index in key.indices { key[index] = 0 } }
                if raw {
                    try key.withUnsafeBytes { try writeStandardOutput($0) }
                } else {
                    try writeStandardOutput(hex + "\n")
                }
            }
        }
    }

    struct DiskRekeyedCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "disk-rekeyed",
            abstract: "Tell the node a disk now uses a newer epoch's key.",
            discussion: """
                After a commit the node lists, in `keyrack node status` and `keyrack rack status`, \
                each disk still keyed under an older epoch (`data0 1→3`). Re-key it with the two \
                keys from `keyrack node disk-key --epoch 1` and `--epoch 3` (for example \
                `cryptsetup luksChangeKey`), then run this command with the new epoch; until then \
                the node keeps reporting the disk, across restarts. A disk keyed by an earlier \
                release (`data0 3(v1)→3`) is re-keyed the same way from `--epoch 3 --key-scheme 1`.
                """
        )
        @OptionGroup var node: AdminSocketOption
        @Option(help: "The disk id (one of the node's configured disks).") var disk: String
        @Option(help: "The epoch whose key the disk now uses (a committed epoch).") var epoch: UInt64

        func run() async throws {
            try await reportingAsyncFailures {
                _ = try await node.perform(AdminRequest(.diskRekeyed, epoch: Epoch(epoch), disk: disk))
                try writeStandardOutput("\(disk): keyed under epoch \(epoch)\n")
            }
        }
    }

    struct LuksBindCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "luks-bind",
            abstract: "Bind an existing LUKS2 volume to the rack: the node can then open it at every boot.",
            discussion: """
                The disk must be a LUKS2 volume in the node's configuration \
                ({"id": "data0", "luks": "/dev/…", "mapper": "data0"}) and the node must be unlocked. \
                The node enrolls the disk key of the latest committed epoch in a new keyslot, \
                authorised by the existing key, and writes a LUKS2 token of type "keyrack" (rack id, \
                disk id, epoch, keyslot) beside it; then it opens the volume (or verifies the key, \
                with "open": false). The existing keyslot is left as it is: keep it as the recovery \
                key. From then on the node re-keys the volume itself after every commit. \
                --existing-key-file reads the whole file as the key (as cryptsetup --key-file does); \
                --existing-key-stdin asks for the passphrase on a terminal, or reads standard input \
                to its end otherwise (printf '%s' "$PASS" | …, no trailing newline). Keys go to \
                cryptsetup through pipes, never arguments or files.
                """
        )
        @OptionGroup var node: AdminSocketOption
        @Option(help: "The disk id (a LUKS2 volume of the node's configuration).") var disk: String
        @Option(help: "A file holding a key that opens the volume now.") var existingKeyFile: String?
        @Flag(help: "Read the existing key from standard input (a prompt on a terminal).") var existingKeyStdin = false

        func validate() throws {
            guard (existingKeyFile == nil) == existingKeyStdin else {
                throw ValidationError("give exactly one of --existing-key-file FILE or --existing-key-stdin")
            }
        }

        func run() async throws {
            try await reportingAsyncFailures {
                var key = try readExistingKey()
                defer { key.resetBytes(in: 0..<key.count) }
                let response = try await volumeRequest(
                    AdminRequest(.luksBind, disk: disk, existingKey: key.base64EncodedString()), node: node)
                try writeStandardOutput(describe(response.volume, disk: disk, verb: "bound") + "\n")
            }
        }

        /// The existing key's bytes (at most 8 KiB, like a cryptsetup key file).
        func readExistingKey() throws -> Data {
            let limit = 8192
            var key: Data
            if let existingKeyFile {
                guard let handle = FileHandle(forReadingAtPath: existingKeyFile) else {
                    throw CommandFailure("cannot read the existing key file \(existingKeyFile)")
                }
                defer { try? handle.close() }
                key = (try? handle.read(upToCount: limit + 1)) ?? Data()
            } else if isatty(STDIN_FILENO) == 1 {
                guard let typed = getpass("Existing passphrase for \(disk): ") else {
                    throw CommandFailure("cannot read a passphrase from the terminal")
                }
                let length = strlen(typed)
                key = Data(bytes: typed, count: length)
                memset(typed, 0, length)
            } else {
                key = FileHandle.standardInput.readDataToEndOfFile()
            }
            guard !key.isEmpty, key.count <= limit else {
                key.resetBytes(in: 0..<key.count)
                throw CommandFailure("the existing key must be 1 to \(limit) bytes")
            }
            return key
        }
    }

    struct LuksFormatCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "luks-format",
            abstract: "Create a LUKS2 volume on an empty device, keyed by the rack alone.",
            discussion: """
                The disk must be a LUKS2 volume in the node's configuration and the node must be \
                unlocked. The node writes a new LUKS2 header whose only key is the disk key of the \
                latest committed epoch (keyslot 0) with its "keyrack" token, then opens the volume \
                (or verifies the key, with "open": false): create the file system on \
                /dev/mapper/<mapper> afterwards. A device holding a LUKS header, or any data in its \
                first MiB, is refused and left untouched (luks-bind binds an existing volume). The \
                volume has no other key: add a recovery passphrase with cryptsetup luksAddKey and \
                `keyrack node disk-key --raw` if you want one.
                """
        )
        @OptionGroup var node: AdminSocketOption
        @Option(help: "The disk id (a LUKS2 volume of the node's configuration).") var disk: String

        func run() async throws {
            try await reportingAsyncFailures {
                let response = try await volumeRequest(AdminRequest(.luksFormat, disk: disk), node: node)
                try writeStandardOutput(describe(response.volume, disk: disk, verb: "formatted") + "\n")
            }
        }
    }

    struct WaitVolumesCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wait-volumes",
            abstract: "Wait until the node has opened (or verified) every bound LUKS2 volume.",
            discussion: """
                For boot ordering (keyrack-volumes.service): waits for the node to start, unlock and \
                open its volumes, prints one line per volume, and exits 0 when every one is open \
                (or verified, with "open": false), 1 as soon as every volume is settled and one \
                failed or is not bound, or when --timeout passes first.
                """
        )
        @OptionGroup var node: AdminSocketOption
        @Option(help: "Give up after this many seconds.") var timeout = 900.0

        func validate() throws {
            guard timeout.isFinite, (0...86_400).contains(timeout) else {
                throw ValidationError("--timeout must be a number of seconds from 0 to 86400")
            }
        }

        func run() async throws {
            try await reportingAsyncFailures {
                let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
                var last: [VolumeStatus] = []
                var lastError = "no answer"
                while true {
                    do {
                        let status = try await node.perform(AdminRequest(.status)).status
                        last = status?.volumes ?? []
                        let ready: Set<VolumeStatus.State> = [.opened, .verified, .rekeying]
                        if last.allSatisfy({ ready.contains($0.state) }) {
                            for volume in last {
                                try writeStandardOutput(describe(volume, disk: volume.disk, verb: "ready") + "\n")
                            }
                            return
                        }
                        if !last.contains(where: { $0.state == .locked }) {
                            break
                        }
                    } catch {
                        lastError = "\(error)"
                    }
                    guard ContinuousClock.now < deadline else {
                        throw CommandFailure(
                            last.isEmpty
                                ? "the node did not answer within \(timeout) s (\(lastError))"
                                : "not every volume is open after \(timeout) s: "
                                    + last.map { "\($0.disk) \($0.state.rawValue)" }.joined(separator: ", "))
                    }
                    try await Task.sleep(for: .milliseconds(250))
                }
                let failed = last.filter { ![.opened, .verified, .rekeying].contains($0.state) }
                throw CommandFailure(
                    failed.map { "\($0.disk): \($0.state.rawValue)\($0.problem.map { " (\($0))" } ?? "")" }
                        .joined(separator: "; "))
            }
        }
    }
}

/// Sends a volume request, which may take a while (a passphrase's key derivation).
private func volumeRequest(_ request: AdminRequest, node: AdminSocketOption) async throws -> AdminResponse {
    try await node.perform(request, timeout: .seconds(600))
}

/// In debug builds, the folders `KEYRACK_TEST_CRYPTSETUP_PATH` names (colon-separated):
/// tests stand in a machine without cryptsetup with it, for the nodes and the demo alike.
/// Nil otherwise, and always in release builds.
func testCryptsetupSearchPath() -> [String]? {
    #if DEBUG
        if let path = ProcessInfo.processInfo.environment["KEYRACK_TEST_CRYPTSETUP_PATH"] {
            return path.split(separator: ":").map(String.init)
        }
    #endif
    return nil
}

private func describe(_ volume: VolumeStatus?, disk: String, verb: String) -> String {
    guard let volume else { return "\(disk): \(verb)" }
    let epoch = volume.epoch.map { " under epoch \($0)" } ?? ""
    let keyslot = volume.keyslot.map { " (keyslot \($0))" } ?? ""
    let state = volume.state == .opened ? ", opened as /dev/mapper/\(volume.mapper ?? "")" : ", key verified"
    return "\(disk): \(verb)\(epoch)\(keyslot)\(state)"
}

struct RackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rack",
        abstract: "Operator commands: set up the rack, add, remove, rotate, and show where every node stands.",
        discussion: """
            Each command talks to the nodes' admin sockets or, over mutually authenticated TLS \
            with the operator certificate, their network admin addresses (--nodes, \
            comma-separated, mixed as needed) and \
            drives the control plane: it picks a coordinator, waits for K + Z members to \
            prepare, then delivers the commit. Every ticket and commit is signed by the \
            operator identity (--operator DIR, from keyrack operator init), whose journal \
            records what it signed so it never signs two configurations for one epoch; nodes \
            act only on signatures that chain to the operator CA they pin. An interrupted \
            command can be run again and resumes from the highest commit whose signature \
            verifies (or retries at the next epoch). A member that \
            is down when a commit is decided catches up when it next boots (it asks for its old \
            epoch and is sent the new configuration); `rack status` shows members that are \
            behind, and re-running the last command brings them along.
            """,
        subcommands: [Init.self, Status.self, Add.self, Remove.self, Rotate.self, PolicyCommand.self]
    )

    struct Nodes: ParsableArguments {
        @Option(
            help: """
                The nodes' admin sockets or network admin addresses (HOST:PORT, their adminListen), \
                comma-separated; mixing both is fine.
                """)
        var nodes: String
        @Option(
            name: .customLong("operator"),
            help: "The operator identity (keyrack operator init) that signs every ticket and commit.")
        var operatorDirectory: String?
        @Option(help: "Give up after this many seconds (the command can be re-run).") var timeout = 60.0
        @Option(help: "Seconds to keep delivering a commit to members that were down when it was decided.")
        var waitForDown = 3.0

        var sockets: [String] { nodes.split(separator: ",").map { String($0) }.filter { !$0.isEmpty } }

        func validate() throws {
            guard !sockets.isEmpty else { throw ValidationError("--nodes names no admin socket or address") }
            for (name, value) in [("--timeout", timeout), ("--wait-for-down", waitForDown)]
            where !(value.isFinite && (0...86_400).contains(value)) {
                throw ValidationError("\(name) must be a number of seconds from 0 to 86400")
            }
        }

        /// A client for the nodes: with the operator's credentials when --operator is given
        /// (needed for network addresses).
        func client() throws -> AdminClient {
            guard let operatorDirectory else {
                if let network = sockets.first(where: { AdminEndpoint(parsing: $0).isNetwork }) {
                    throw CommandFailure("\(network) is a network address: --operator DIR is needed to authenticate")
                }
                return AdminClient()
            }
            do {
                return try AdminClient(operatorDirectory: URL(fileURLWithPath: operatorDirectory))
            } catch {
                throw CommandFailure("--operator \(operatorDirectory): \(error)")
            }
        }

        func makeOperator() throws -> RackOperator {
            guard let operatorDirectory else {
                throw CommandFailure(
                    "--operator DIR is required: every decision is signed by the operator (create one with keyrack operator init)"
                )
            }
            var rackOperator: RackOperator
            do {
                rackOperator = try RackOperator(
                    sockets: sockets, operatorDirectory: URL(fileURLWithPath: operatorDirectory)
                ) { line in print(line) }
            } catch {
                throw CommandFailure("--operator \(operatorDirectory): \(error)")
            }
            rackOperator.timeout = .milliseconds(Int(timeout * 1000))
            rackOperator.waitForDownMembers = .milliseconds(Int(waitForDown * 1000))
            return rackOperator
        }
    }

    static func drive(_ nodes: Nodes, _ goal: RackOperator.Goal, threshold: Int?) async throws {
        try await reportingAsyncFailures {
            do {
                let committed = try await nodes.makeOperator().run(goal, threshold: threshold)
                print(
                    "done: epoch \(committed.epoch), \(committed.memberCount) members, threshold \(committed.threshold)"
                )
            } catch {
                throw CommandFailure("\(error)")
            }
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set up the rack: the first configuration over every node in --nodes.")
        @OptionGroup var nodes: Nodes
        @Option(help: "Threshold K (default N/2 + 1).") var threshold: Int?
        func run() async throws { try await RackCommand.drive(nodes, .initialize, threshold: threshold) }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add nodes (their admin sockets or addresses) to the rack.")
        @OptionGroup var nodes: Nodes
        @Option(help: "The admin sockets or addresses of the nodes to add, comma-separated.") var add: String
        @Option(help: "Threshold K (default N/2 + 1).") var threshold: Int?
        func run() async throws {
            let added = add.split(separator: ",").map { String($0) }
            try await RackCommand.drive(nodes, .add(added), threshold: threshold)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove nodes (platform ids) from the rack.")
        @OptionGroup var nodes: Nodes
        @Option(help: "The platform ids (part:serial) to remove, comma-separated.") var remove: String
        @Option(help: "Threshold K (default N/2 + 1).") var threshold: Int?
        func run() async throws {
            var removed: Set<PlatformId> = []
            for id in remove.split(separator: ",") {
                do {
                    removed.insert(try NodeConfiguration.platformId(String(id), field: "--remove"))
                } catch {
                    writeStandardError("keyrack: \(error)\n")
                    throw ExitCode(2)
                }
            }
            try await RackCommand.drive(nodes, .remove(removed), threshold: threshold)
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rotate the rack secret (same members, new epoch).")
        @OptionGroup var nodes: Nodes
        func run() async throws { try await RackCommand.drive(nodes, .rotate, threshold: nil) }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per node: epoch, committed or not, unlocked or not, peers, alarms, disks to re-key.",
            discussion: """
                Exits 0 when every node answered, 1 when one or more did not (they are shown as \
                unreachable, or null with --json).
                """
        )
        @OptionGroup var nodes: Nodes
        @Flag(help: "Print the statuses as JSON.") var json = false

        func run() async throws {
            let reports = await RackOperator.survey(nodes.sockets, client: try nodes.client())
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let statuses = reports.map { $0.status }
                print(String(decoding: (try? encoder.encode(statuses)) ?? Data(), as: UTF8.self))
            } else {
                print(RackTable.render(reports))
            }
            try RackCommand.failIfUnreachable(reports)
        }
    }

    /// Names the nodes that did not answer on standard error and exits 1, if any.
    static func failIfUnreachable(_ reports: [RackOperator.NodeReport]) throws {
        let unreachable = reports.filter { $0.status == nil }
        guard !unreachable.isEmpty else { return }
        for report in unreachable {
            writeStandardError("keyrack: \(report.socket): \(report.error?.description ?? "no answer")\n")
        }
        throw ExitCode(1)
    }
}

/// The `rack status` table.
enum RackTable {
    // Swift 6.3's optimizer crashes on this function in release builds
    // ("Found ownership error" in CopyPropagation), as on RackOperator.drive.
    @_optimize(none)
    static func render(_ reports: [RackOperator.NodeReport]) -> String {
        let latest = reports.compactMap { $0.status?.committedEpoch }.max()
        var rows = [["node", "epoch", "committed", "unlocked", "peers", "alarms", "re-key"]]
        for report in reports {
            guard let status = report.status else {
                rows.append([report.socket, "-", "-", "-", "-", "unreachable", ""])
                continue
            }
            let epoch = status.committedEpoch.map { "\($0)" } ?? "-"
            let committed: String
            if let expunged = status.expunged {
                committed = "expunged@\(expunged.epoch)"
            } else if let epoch = status.committedEpoch {
                committed = epoch == latest ? "yes" : "behind"
            } else {
                committed = "no"
            }
            let unlocked = status.unlockedEpoch.map { $0 == status.committedEpoch ? "yes" : "at \($0)" } ?? "no"
            let rekey = status.rekey.map(\.summary).joined(separator: " ")
            rows.append([
                status.platform.description, epoch, committed, unlocked, "\(status.connected.count)",
                status.alarms.isEmpty ? "none" : status.alarms.joined(separator: "; "), rekey,
            ])
        }
        return Columns.render(rows)
    }
}

/// Which node to ask: its admin socket or network address, or its
/// configuration file (which names the socket).
struct AdminSocketOption: ParsableArguments {
    @Option(help: "The node's admin socket, or its network admin address (HOST:PORT, with --operator).")
    var admin: String?
    @Option(help: "The node's configuration file (its admin socket is used).") var config: String?
    @Option(
        name: .customLong("operator"),
        help: "The operator identity (keyrack operator init) to authenticate with, for a network address.")
    var operatorDirectory: String?

    func validate() throws {
        guard (admin == nil) != (config == nil) else {
            throw ValidationError("name the node with exactly one of --admin SOCKET or --config FILE")
        }
    }

    /// Sends `request` to the node and returns its answer, or throws its error.
    func perform(_ request: AdminRequest, timeout: Duration = .seconds(10)) async throws -> AdminResponse {
        let endpoint = AdminEndpoint(parsing: try socket())
        let client: AdminClient
        if endpoint.isNetwork {
            guard let operatorDirectory else {
                throw CommandFailure("\(endpoint) is a network address: --operator DIR is needed to authenticate")
            }
            do {
                client = try AdminClient(operatorDirectory: URL(fileURLWithPath: operatorDirectory))
            } catch {
                throw CommandFailure("--operator \(operatorDirectory): \(error)")
            }
        } else {
            client = AdminClient()
        }
        return try await client.perform(request, at: endpoint, timeout: timeout)
    }

    /// The admin socket's path (or network address).
    func socket() throws -> String {
        if let admin { return admin }
        let file = config ?? ""
        do {
            return try NodeConfiguration(contentsOf: file).admin
        } catch {
            throw CommandFailure("\(file): \(error)")
        }
    }
}
