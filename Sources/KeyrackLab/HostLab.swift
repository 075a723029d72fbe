import Foundation
import KeyrackCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Separate network hosts on one machine: Linux network namespaces, one
/// per host, each with one interface (`eth0`) on a private subnet, joined
/// by a bridge that lives in a namespace of its own (the hub), so nothing
/// is added to the machine's own network: every address is inside a
/// namespace this lab created. A host is partitioned by taking its link
/// down at the hub (`ip link set … down`) and healed by bringing it up.
///
/// Needs root and `ip` from iproute2 (``requirements()`` says what is
/// missing). ``destroy()`` deletes every namespace it made by name (their
/// links go with them); processes started in them are the caller's to stop.
/// Namespaces a crashed earlier run left behind (named after a process
/// that no longer exists) are removed when a lab is made.
public final class HostLab: @unchecked Sendable {
    /// One host: its namespace and address.
    public struct Host: Sendable, Hashable {
        /// The label it was made with (`n1`, `op`).
        public let label: String
        /// Its network namespace.
        public let namespace: String
        /// Its address on the lab's subnet.
        public let address: String
        /// Its link's name at the hub.
        let hubLink: String
    }

    /// The subnet's first three octets (a /24).
    public let subnet: String
    /// The prefix of every namespace this lab makes (`kr-<pid>-<n>`).
    public let prefix: String
    /// The hosts made so far.
    public private(set) var hosts: [Host] = []
    private let hub: String
    private let ip: String
    private var destroyed = false

    private static let sequence = Mutex(0)

    /// What the lab needs that this machine lacks, as a sentence naming
    /// the fix, or `nil` when it can run.
    public static func requirements() -> String? {
        var missing: [String] = []
        if getuid() != 0 { missing.append("root (network namespaces are made with ip netns; run as root)") }
        if findIP() == nil { missing.append("`ip` from iproute2 (apt-get install iproute2)") }
        guard !missing.isEmpty else { return nil }
        return "separate hosts need " + missing.joined(separator: " and ")
    }

    private static func findIP() -> String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// A lab on `subnet` (three octets; default 10.77.0) with its hub made.
    public init(subnet: String = "10.77.0") throws(LabError) {
        if let missing = Self.requirements() { throw LabError(.setup, missing) }
        ip = Self.findIP() ?? "ip"
        self.subnet = subnet
        let number = Self.sequence.withLock { value in
            value += 1
            return value
        }
        prefix = "kr-\(getpid())-\(number)"
        hub = prefix + "-hub"
        Self.removeStale(ip: ip)
        do {
            try run(["netns", "add", hub])
            try run(["-n", hub, "link", "set", "lo", "up"])
            try run(["-n", hub, "link", "add", "br0", "type", "bridge"])
            try run(["-n", hub, "link", "set", "br0", "up"])
        } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    /// Adds a host `label` at `subnet.octet` (2…254).
    @discardableResult
    public func addHost(_ label: String, octet: Int) throws(LabError) -> Host {
        guard (2...254).contains(octet),
            !hosts.contains(where: { $0.label == label || $0.address.hasSuffix(".\(octet)") })
        else {
            throw LabError(.setup, "host \(label) at .\(octet): the octet must be 2…254 and label and address unused")
        }
        let host = Host(
            label: label, namespace: "\(prefix)-\(label)", address: "\(subnet).\(octet)", hubLink: "p\(hosts.count)")
        try run(["netns", "add", host.namespace])
        hosts.append(host)
        try run(["-n", host.namespace, "link", "set", "lo", "up"])
        try run([
            "-n", hub, "link", "add", host.hubLink, "type", "veth", "peer", "name", "eth0", "netns", host.namespace,
        ])
        try run(["-n", hub, "link", "set", host.hubLink, "master", "br0"])
        try run(["-n", hub, "link", "set", host.hubLink, "up"])
        try run(["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", "eth0"])
        try run(["-n", host.namespace, "link", "set", "eth0", "up"])
        return host
    }

    /// Cuts `host` off the network (its link at the hub goes down).
    public func partition(_ host: Host) throws(LabError) {
        try run(["-n", hub, "link", "set", host.hubLink, "down"])
    }

    /// Reconnects a partitioned `host`.
    public func heal(_ host: Host) throws(LabError) {
        try run(["-n", hub, "link", "set", host.hubLink, "up"])
    }

    /// The command line that runs `executable arguments` inside `host`.
    public func command(in host: Host, _ executable: String, _ arguments: [String]) -> (String, [String]) {
        (ip, ["netns", "exec", host.namespace, executable] + arguments)
    }

    /// Deletes every namespace this lab made (their links go with them).
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        for host in hosts.reversed() { try? run(["netns", "delete", host.namespace]) }
        try? run(["netns", "delete", hub])
        hosts = []
    }

    /// Runs `ip arguments`, waiting at most 10 s.
    private func run(_ arguments: [String]) throws(LabError) {
        let (status, output) = Self.runIP(ip, arguments)
        guard status == 0 else {
            throw LabError(.setup, "ip \(arguments.joined(separator: " ")) failed (\(status)): \(output)")
        }
    }

    private static func runIP(_ ip: String, _ arguments: [String]) -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return (-1, "\(error)")
        }
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning, Date() < deadline { usleep(2_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return (-1, "timed out")
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Deletes `kr-<pid>-…` namespaces whose process is gone (a run that crashed).
    private static func removeStale(ip: String) {
        let (status, output) = runIP(ip, ["netns", "list"])
        guard status == 0 else { return }
        for line in output.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count >= 4, parts[0] == "kr", let pid = Int32(parts[1]) else { continue }
            if pid != getpid(), kill(pid, 0) != 0, errno == ESRCH { _ = runIP(ip, ["netns", "delete", name]) }
        }
    }
}
