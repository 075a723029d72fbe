import Foundation

/// A real Redis Cluster of `masters` masters (no replicas) on loopback,
/// made with `redis-cli --cluster create`, for one test. Each node's
/// process is ours, stopped by pid; its files are removed at the end.
///
/// `cluster-require-full-coverage no`: when a master is down the others
/// go on serving their slots, as a deployment should be configured.
public final class RedisCluster: @unchecked Sendable {
    public let ports: [Int]
    private var processes: [Int: Process] = [:]
    private let directory: URL

    public init(masters: Int = 3) throws {
        guard let server = findExecutable("redis-server"), let cli = findExecutable("redis-cli") else {
            throw TestSupportError(
                "redis-server and redis-cli are needed: run `apt-get install -y redis-server` (CI does this in .ci/run)"
            )
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-cluster-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var ports: [Int] = []
        var attempts = 0
        while ports.count < masters {
            attempts += 1
            guard attempts < 50 else { throw TestSupportError("no free port pairs for a Redis Cluster") }
            // The cluster bus listens on port + 10000.
            let candidate = try freeLoopbackPort()
            guard candidate + 10_000 <= 65_535, !canConnect(port: candidate + 10_000), !ports.contains(candidate) else {
                continue
            }
            let node = directory.appendingPathComponent("\(candidate)")
            try FileManager.default.createDirectory(at: node, withIntermediateDirectories: true)
            do {
                processes[candidate] = try RedisServer.launch(
                    server, port: candidate, directory: node,
                    extra: [
                        "--cluster-enabled", "yes", "--cluster-config-file",
                        node.appendingPathComponent("nodes.conf").path,
                        "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no",
                    ])
                ports.append(candidate)
            } catch {
                continue
            }
        }
        self.ports = ports
        let create = try runProcessBlocking(
            URL(fileURLWithPath: cli),
            ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "0", "--cluster-yes"])
        guard create.status == 0 else {
            throw TestSupportError(
                "redis-cli --cluster create failed: \(String(decoding: create.output + create.errors, as: UTF8.self))")
        }
        // Every node must see the whole cluster as ok before it is used.
        for port in ports {
            var ok = false
            for _ in 0..<100 where !ok {
                let info = try runProcessBlocking(URL(fileURLWithPath: cli), ["-p", "\(port)", "cluster", "info"])
                ok = String(decoding: info.output, as: UTF8.self).contains("cluster_state:ok")
                if !ok { usleep(100_000) }
            }
            guard ok else { throw TestSupportError("the Redis Cluster node on \(port) did not reach cluster_state:ok") }
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`
    public var url: String { "redis+cluster://" + ports.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    /// Runs `redis-cli -p port args…` and returns its output.
    public func cli(_ port: Int, _ arguments: [String]) throws -> String {
        guard let cli = findExecutable("redis-cli") else { throw TestSupportError("redis-cli vanished") }
        let result = try runProcessBlocking(URL(fileURLWithPath: cli), ["-p", "\(port)"] + arguments)
        return String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The port of the master serving `slot` (from `CLUSTER NODES`).
    public func owner(ofSlot slot: Int) throws -> Int {
        let nodes = try cli(ports[0], ["cluster", "nodes"])
        for line in nodes.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 9, fields[2].contains("master") else { continue }
            let serves = fields.dropFirst(8).contains { range in
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                return bounds.count == 2 ? (bounds[0]...bounds[1]).contains(slot) : bounds.first == slot
            }
            if serves, let address = fields[1].split(separator: "@").first,
                let port = address.split(separator: ":").last.flatMap({ Int($0) })
            {
                return port
            }
        }
        throw TestSupportError("no master serves slot \(slot):\n\(nodes)")
    }

    /// Kills the node on `port` (SIGKILL, as a crash).
    public func kill(_ port: Int) {
        guard let process = processes.removeValue(forKey: port) else { return }
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit {
        for port in Array(processes.keys) { kill(port) }
        try? FileManager.default.removeItem(at: directory)
    }
}
