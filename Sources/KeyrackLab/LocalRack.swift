import Foundation
import KeyrackCore
import NodeAgent
import SecretSharing
import Synchronization
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// A rack of `keyrack node run` processes on this machine's loopback, for
/// `keyrack demo`, `keyrack bench rack` and the multi-process tests: a
/// manufacturing CA, an operator identity (whose CA every node pins), one
/// device identity, ledger pair, admin socket and configuration per node,
/// and the processes themselves.
///
/// Not thread-safe: drive it from one task.
public final class LocalRack {
    /// One node of the rack.
    public struct Member: Sendable {
        /// Its position (0-based).
        public let index: Int
        /// Its platform id.
        public let platform: PlatformId
        /// Its directory.
        public let directory: URL
        /// Its configuration file.
        public let configurationFile: String
        /// Its configuration.
        public let configuration: NodeConfiguration
        /// Its admin socket.
        public var socket: String { configuration.admin }
        /// Its host, when the rack runs on separate hosts (``HostLab``).
        public let host: HostLab.Host?
        /// Its network admin address (`adminListen`), if it has one.
        public var adminAddress: String? { configuration.adminListen?.description }
        /// Where it serves metrics (`metricsListen`), if it does.
        public var metricsAddress: String? { configuration.metricsListen?.description }
        /// Where its process logs.
        public var logFile: String { directory.appendingPathComponent("node.log").path }
    }

    /// The rack's directory (removed by ``destroy()``).
    public let directory: URL
    /// The `keyrack` executable the nodes run.
    public let executable: String
    /// The rack id.
    public let rackId: RackId
    /// The nodes, started or not.
    public let members: [Member]
    /// The manufacturing CA's directory.
    public let caDirectory: URL
    /// The operator identity's directory (`keyrack operator init`).
    public let operatorDirectory: URL
    /// The attestation policy file every node appraises its peers against.
    public let policyFile: URL
    /// The hosts the nodes run on (`nil`: all on this machine's loopback).
    public let hosts: HostLab?
    private var processes: [Int: Process] = [:]
    /// The node processes' ids, readable from a signal handler.
    public let processIdentifiers = ProcessRegistry()

    /// The ids of a rack's node processes, safe to read from any thread (a
    /// signal handler stopping them when the program is interrupted).
    public final class ProcessRegistry: Sendable {
        private let ids = Mutex<Set<Int32>>([])
        /// Registers a process (a node, or a command the lab runs for the caller).
        public func insert(_ id: Int32) { ids.withLock { _ = $0.insert(id) } }
        /// Forgets a process that ended.
        public func remove(_ id: Int32) { ids.withLock { _ = $0.remove(id) } }
        /// Sends `signal` to every node process still registered.
        public func signalAll(_ signal: Int32) {
            for id in ids.withLock({ $0 }) { kill(id, signal) }
        }
    }

    /// Where the nodes listen on a host of their own: peers, admin API, metrics.
    public static let hostPorts = (peers: 7001, admin: 7101, metrics: 9101)
    /// The first address octet of node hosts (node 1 is at `.11`).
    public static let firstNodeOctet = 11

    /// Creates `count` node identities and configurations in `directory`
    /// (created if missing), signed by a fresh manufacturing CA, with
    /// `policy` as every node's attestation policy.
    ///
    /// With `hosts`, node `i` runs on a host of its own (`n<i>`, at
    /// `subnet.(10 + i)`), listening there for peers, for the admin API
    /// (always, since the operator is elsewhere) and for metrics on
    /// ``hostPorts``. Without, every node listens on loopback, with a
    /// network admin listener if `adminListen` and metrics if `metrics`.
    public init(
        directory: URL,
        executable: String,
        count: Int,
        keyType: DeviceKeyType = .ed25519,
        disks: [String] = ["data0"],
        policy: Data,
        evidence: String = "rot",
        part: String = "kr-demo",
        hosts: HostLab? = nil,
        adminListen: Bool = false,
        metrics: Bool = false,
        allowNetworkDiskKey: Bool = false
    ) throws(LabError) {
        self.directory = directory
        self.hosts = hosts
        self.executable = executable
        caDirectory = directory.appendingPathComponent("ca")
        operatorDirectory = directory.appendingPathComponent("operator")
        policyFile = directory.appendingPathComponent("policy.json")
        var random = SystemRandomSource()
        rackId = RackId.random(using: &random)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try policy.write(to: policyFile)
            let ca = try ManufacturingCA.create(in: caDirectory)
            try OperatorIdentity.create(in: operatorDirectory, ca: ca, name: "lab operator")
            let platforms = (1...count).map { PlatformId(part: part, serial: String(format: "sn-%04d", $0)) }
            var nodeHosts: [HostLab.Host?] = Array(repeating: nil, count: count)
            if let hosts {
                for index in 0..<count {
                    nodeHosts[index] = try hosts.addHost("n\(index + 1)", octet: Self.firstNodeOctet + index)
                }
            }
            func loopback() throws(LabError) -> PeerAddress {
                PeerAddress(host: "127.0.0.1", port: try LoopbackPorts.free())
            }
            var listens: [PeerAddress] = []
            var admins: [PeerAddress?] = []
            var metricsAddresses: [PeerAddress?] = []
            for host in nodeHosts {
                if let host {
                    listens.append(PeerAddress(host: host.address, port: Self.hostPorts.peers))
                    admins.append(PeerAddress(host: host.address, port: Self.hostPorts.admin))
                    metricsAddresses.append(
                        metrics ? PeerAddress(host: host.address, port: Self.hostPorts.metrics) : nil)
                } else {
                    listens.append(try loopback())
                    admins.append(adminListen ? try loopback() : nil)
                    metricsAddresses.append(metrics ? try loopback() : nil)
                }
            }
            var members: [Member] = []
            for (index, platform) in platforms.enumerated() {
                let nodeDirectory = directory.appendingPathComponent("node-\(index + 1)")
                let identity = try DeviceIdentity.initialize(
                    directory: nodeDirectory, platform: platform, keyType: keyType)
                let certificate = nodeDirectory.appendingPathComponent("device.pem")
                try (try ca.sign(identity.csr).serializeAsPEM().pemString + "\n")
                    .write(to: certificate, atomically: true, encoding: .utf8)
                var peers: [PlatformId: PeerAddress] = [:]
                for (other, address) in zip(platforms, listens) where other != platform {
                    peers[other] = address
                }
                let configuration = NodeConfiguration(
                    platform: platform,
                    rackId: rackId,
                    deviceKey: nodeDirectory.appendingPathComponent("device.key").path,
                    certificate: certificate.path,
                    intermediate: caDirectory.appendingPathComponent("intermediate.pem").path,
                    root: caDirectory.appendingPathComponent("root.pem").path,
                    operatorCA: operatorDirectory.appendingPathComponent("operator-ca.pem").path,
                    listen: listens[index],
                    peers: peers,
                    ledger: [
                        nodeDirectory.appendingPathComponent("ledger-a").path,
                        nodeDirectory.appendingPathComponent("ledger-b").path,
                    ],
                    admin: nodeDirectory.appendingPathComponent("admin.sock").path,
                    adminListen: admins[index],
                    allowNetworkDiskKey: allowNetworkDiskKey && admins[index] != nil,
                    metricsListen: metricsAddresses[index],
                    policy: policyFile.path,
                    evidence: evidence,
                    disks: disks
                )
                let file = nodeDirectory.appendingPathComponent("node.json")
                try configuration.json().write(to: file)
                members.append(
                    Member(
                        index: index,
                        platform: platform,
                        directory: nodeDirectory,
                        configurationFile: file.path,
                        configuration: configuration,
                        host: nodeHosts[index]
                    ))
            }
            self.members = members
        } catch let error as LabError {
            throw error
        } catch {
            throw LabError(.setup, "cannot create the local rack in \(directory.path): \(error)")
        }
    }

    /// The admin sockets of `indices` (all nodes by default).
    public func sockets(_ indices: [Int]? = nil) -> [String] {
        (indices ?? members.map(\.index)).map { members[$0].socket }
    }

    /// The network admin addresses of `indices` (all nodes by default), for
    /// an operator elsewhere; a node without one is named by its socket.
    public func endpoints(_ indices: [Int]? = nil) -> [String] {
        (indices ?? members.map(\.index)).map { members[$0].adminAddress ?? members[$0].socket }
    }

    /// Whether node `index` has a running process.
    public func isRunning(_ index: Int) -> Bool { processes[index]?.isRunning ?? false }

    /// Starts node `index` (`keyrack node run --config …`, then `arguments`),
    /// logging to its ``Member/logFile``, and returns once its admin socket answers.
    public func start(
        _ index: Int,
        arguments: [String] = [],
        environment: [String: String] = [:],
        executable: String? = nil,
        timeout: Duration = .seconds(60)
    ) async throws(LabError) {
        try launch(index, arguments: arguments, environment: environment, executable: executable)
        try await waitUntilAnswering(index, timeout: timeout)
    }

    /// Starts the process of node `index` without waiting for it.
    public func launch(
        _ index: Int, arguments: [String] = [], environment: [String: String] = [:], executable: String? = nil
    ) throws(LabError) {
        guard !isRunning(index) else { return }
        let member = members[index]
        let process = Process()
        let program = executable ?? self.executable
        let nodeArguments = ["node", "run", "--config", member.configurationFile] + arguments
        if let hosts, let host = member.host {
            // `ip netns exec` execs the node in place: the process id is the node's.
            let (ip, wrapped) = hosts.command(in: host, program, nodeArguments)
            process.executableURL = URL(fileURLWithPath: ip)
            process.arguments = wrapped
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = nodeArguments
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        do {
            if !FileManager.default.fileExists(atPath: member.logFile) {
                _ = FileManager.default.createFile(atPath: member.logFile, contents: nil)
            }
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: member.logFile))
            log.seekToEndOfFile()
            process.standardOutput = log
            process.standardError = log
            process.standardInput = FileHandle.nullDevice
            try process.run()
            try? log.close()
        } catch {
            throw LabError(.start, "cannot start node \(index + 1): \(error)")
        }
        processes[index] = process
        processIdentifiers.insert(process.processIdentifier)
    }

    /// Waits until node `index`'s admin socket answers.
    public func waitUntilAnswering(_ index: Int, timeout: Duration = .seconds(60)) async throws(LabError) {
        let deadline = ContinuousClock.now + timeout
        var lastError = "no answer"
        // One more try once the deadline has passed: a caller starved of CPU
        // (a whole test suite on two cores) may wake only after it.
        for final in [false, true] {
            while final || ContinuousClock.now < deadline {
                do {
                    _ = try await AdminSocket.perform(AdminRequest(.status), path: members[index].socket)
                    return
                } catch {
                    lastError = error.description
                }
                if let process = processes[index], !process.isRunning {
                    throw LabError(
                        .start,
                        "node \(index + 1) exited with status \(process.terminationStatus): \(logTail(index))")
                }
                if final { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        throw LabError(
            .timeout, "node \(index + 1) did not answer within \(timeout) (\(lastError)): \(logTail(index))")
    }

    /// Stops node `index` with `signal` (SIGTERM: a clean stop; SIGKILL: a
    /// crash) and waits for the process to end.
    public func stop(_ index: Int, signal: Int32 = SIGTERM) async {
        guard let process = processes.removeValue(forKey: index) else { return }
        defer { processIdentifiers.remove(process.processIdentifier) }
        if process.isRunning { kill(process.processIdentifier, signal) }
        await Self.waitForExit(process)
    }

    /// Sends `signal` to node `index`'s process, if it runs (SIGHUP: reload the denied certificates).
    public func signal(_ index: Int, _ signal: Int32) {
        guard let process = processes[index], process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Stops every node.
    public func stopAll(signal: Int32 = SIGTERM) async {
        for index in Array(processes.keys).sorted() {
            if let process = processes[index], process.isRunning { kill(process.processIdentifier, signal) }
        }
        for index in Array(processes.keys).sorted() { await stop(index, signal: SIGKILL) }
    }

    /// Stops every node and removes the rack's directory.
    public func destroy() async {
        await stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    /// The node's process after it ended on its own (nil while it runs).
    public func exitStatus(_ index: Int) -> Int32? {
        guard let process = processes[index], !process.isRunning else { return nil }
        return process.terminationStatus
    }

    /// Statuses of `indices` (nil for a node that does not answer).
    public func statuses(_ indices: [Int]) async -> [NodeStatus?] {
        await RackOperator.survey(sockets(indices)).map(\.status)
    }

    /// An operator over the nodes `indices` (all by default) that signs with
    /// the rack's operator identity.
    public func rackOperator(
        _ indices: [Int]? = nil, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) throws(LabError) -> RackOperator {
        do {
            return try RackOperator(sockets: sockets(indices), operatorDirectory: operatorDirectory, progress: progress)
        } catch {
            throw LabError(.setup, "cannot open the rack's operator identity: \(error)")
        }
    }

    /// Waits until every node in `indices` satisfies `condition`, and returns their statuses.
    @discardableResult
    public func waitUntil(
        _ indices: [Int],
        timeout: Duration = .seconds(30),
        _ what: String,
        _ condition: @escaping (NodeStatus) -> Bool
    ) async throws(LabError) -> [NodeStatus] {
        let deadline = ContinuousClock.now + timeout
        var last: [NodeStatus?] = []
        repeat {
            // Checked once more after the deadline: a starved caller may wake only after it.
            let final = ContinuousClock.now >= deadline
            last = await statuses(indices)
            let ready = last.compactMap { $0 }.filter(condition)
            if ready.count == indices.count { return ready }
            if final { break }
            try? await Task.sleep(for: .milliseconds(25))
        } while true
        let lagging = zip(indices, last).filter { $0.1.map { !condition($0) } ?? true }.map { "node \($0.0 + 1)" }
        throw LabError(.timeout, "\(lagging.joined(separator: ", ")) not \(what) within \(timeout)")
    }

    /// The last lines of node `index`'s log.
    public func logTail(_ index: Int, lines: Int = 8) -> String {
        let text = (try? String(contentsOfFile: members[index].logFile, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    static func waitForExit(_ process: Process) async {
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                // Foundation has not noticed the exit (seen once with a child that crashed): reap it ourselves.
                var status: Int32 = 0
                kill(process.processIdentifier, SIGKILL)
                _ = waitpid(process.processIdentifier, &status, 0)
                return
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

}
