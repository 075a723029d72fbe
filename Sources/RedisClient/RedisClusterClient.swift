import Foundation
import KeyrackCore
import NIOCore
import NIOPosix
import Synchronization

/// Where a Redis Cluster is: seed nodes and what every connection to any
/// node shares (AUTH, TLS, timeouts, pool size per node).
public struct RedisClusterConfiguration: Sendable, Equatable, CustomStringConvertible {
    /// Nodes to ask for the slot map (any subset of the cluster).
    public var seeds: [RedisNode]
    /// AUTH, TLS and timeouts for every node; its host and port are ignored.
    public var template: RedisConfiguration

    public init(seeds: [RedisNode], template: RedisConfiguration) {
        self.seeds = seeds
        self.template = template
    }

    /// Parses `redis+cluster://[[user]:password@]h1:p1,h2:p2,…` (or
    /// `rediss+cluster://` for TLS). A cluster has no database index.
    public init(url: String) throws(RedisConfigurationError) {
        let tls = url.hasPrefix("rediss+cluster://")
        guard tls || url.hasPrefix("redis+cluster://") else {
            throw .init(.scheme, "a cluster URL starts with redis+cluster:// or rediss+cluster://")
        }
        var rest = Substring(url.dropFirst(tls ? "rediss+cluster://".count : "redis+cluster://".count))
        var credentials = ""
        if let at = rest.lastIndex(of: "@") {
            credentials = String(rest[..<at]) + "@"
            rest = rest[rest.index(after: at)...]
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/") else {
            throw .init(.database, "a Redis Cluster has no database index: drop the /db from the URL")
        }
        var seeds: [RedisNode] = []
        var template: RedisConfiguration?
        for part in rest.split(separator: ",", omittingEmptySubsequences: false) {
            let node = try RedisConfiguration(url: (tls ? "rediss://" : "redis://") + credentials + part)
            seeds.append(RedisNode(host: node.host, port: node.port))
            template = template ?? node
        }
        guard let template, !seeds.isEmpty else { throw .init(.host, "the cluster URL names no node") }
        self.init(seeds: seeds, template: template)
    }

    public var description: String {
        let credentials = template.password == nil ? "" : "\(template.user ?? ""):<redacted>@"
        let nodes = seeds.map { "\($0.host):\($0.port)" }.joined(separator: ",")
        return "\(template.tls ? "rediss" : "redis")+cluster://\(credentials)\(nodes)"
    }
}

/// One node of a cluster.
public struct RedisNode: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { "\(host):\(port)" }
}

/// A client for a Redis Cluster: each command goes to the master serving
/// its key's hash slot, through a pool per master.
///
/// The slot map comes from `CLUSTER SLOTS` (asked of the seeds, then of any
/// known node) before the first command and again after a `MOVED`
/// redirect or a failed node (at most once a second). `MOVED` is followed
/// at once to the node it names; `ASK` is followed on a fresh connection
/// with `ASKING` first, as the protocol requires. At most five redirects
/// per command. A master that is down fails the commands for its slots
/// (``RedisError/unavailable(_:)``); the others go on.
public final class RedisClusterClient: RedisCommanding {
    public let configuration: RedisClusterConfiguration
    private let group: any EventLoopGroup

    private struct Topology {
        /// The master of each of the 16,384 slots, if known.
        var slots: [RedisNode?] = Array(repeating: nil, count: 16_384)
        var pools: [RedisNode: RedisClient] = [:]
        var lastRefresh: ContinuousClock.Instant?
        var refreshing: Task<Result<Void, RedisError>, Never>?
        var closed = false
    }

    private let topology = Mutex(Topology())
    /// Redirects followed per command, at most.
    static let maximumRedirects = 5

    public init(
        configuration: RedisClusterConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.group = group
    }

    // MARK: - Slots

    /// The hash slot of `key`: CRC16 (XMODEM) of the key, or of the text
    /// between its first `{` and the next `}` when that is not empty, mod 16,384.
    public static func slot(of key: [UInt8]) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = key[(open + 1)..<close]
        }
        var crc: UInt16 = 0
        for byte in hashed {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return Int(crc) & 16_383
    }

    static func bytes(_ argument: RESPArgument) -> [UInt8] {
        switch argument {
        case .string(let text): Array(text.utf8)
        case .bytes(let bytes): bytes
        }
    }

    // MARK: - RedisCommanding

    public func send(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
        let slot = command.count > 1 ? Self.slot(of: Self.bytes(command[1])) : nil
        return try await routed(slot: slot) { client throws(RedisError) in
            try await client.send(command)
        } asking: {
            command
        }
    }

    public func evaluate(
        _ script: RedisScript, keys: [RESPArgument], arguments: [RESPArgument]
    ) async throws(RedisError) -> RESPValue {
        let slots = Set(keys.map { Self.slot(of: Self.bytes($0)) })
        guard slots.count <= 1 else {
            throw .server("CROSSSLOT the keys of one script must share a hash slot on a cluster")
        }
        return try await routed(slot: slots.first) { client throws(RedisError) in
            try await client.evaluate(script, keys: keys, arguments: arguments)
        } asking: {
            ["EVAL", .string(script.source), .int(keys.count)] + keys + arguments
        }
    }

    public func checkReady() async throws(RedisError) {
        try await refreshIfNeeded(stale: false)
        let masters = topology.withLock { Set($0.slots.compactMap { $0 }) }
        guard !masters.isEmpty else { throw .unavailable("the cluster serves no slot") }
        for master in masters.sorted(by: { $0.description < $1.description }) {
            do {
                _ = try await pool(for: master).send(["PING"])
            } catch {
                try? await refreshIfNeeded(stale: true)
                throw .unavailable("cluster node \(master): \(error)")
            }
        }
    }

    public func shutdown() {
        let pools = topology.withLock { state in
            state.closed = true
            defer { state.pools = [:] }
            return Array(state.pools.values)
        }
        for pool in pools { pool.shutdown() }
    }

    // MARK: - Routing

    private func routed(
        slot: Int?,
        _ run: (RedisClient) async throws(RedisError) -> RESPValue,
        asking: () -> [RESPArgument]
    ) async throws(RedisError) -> RESPValue {
        try await refreshIfNeeded(stale: false)
        var target = try node(for: slot)
        for _ in 0...Self.maximumRedirects {
            do {
                return try await run(pool(for: target))
            } catch .server(let message) where message.hasPrefix("MOVED ") {
                guard let (movedSlot, node) = Self.redirect(message) else { throw .protocolError(message) }
                topology.withLock { $0.slots[movedSlot] = node }
                Task { try? await self.refreshIfNeeded(stale: true) }
                target = node
            } catch .server(let message) where message.hasPrefix("ASK ") {
                guard let (_, node) = Self.redirect(message) else { throw .protocolError(message) }
                return try await askOnce(node, asking())
            } catch .server(let message) where message.hasPrefix("CLUSTERDOWN") || message.hasPrefix("TRYAGAIN") {
                throw .unavailable("cluster: \(message)")
            } catch .unavailable(let reason) {
                // The master may have failed over: learn the new map for the next command.
                try? await refreshIfNeeded(stale: true)
                throw .unavailable("cluster node \(target): \(reason)")
            } catch .notSent(let reason) {
                try? await refreshIfNeeded(stale: true)
                throw .unavailable("cluster node \(target): \(reason)")
            }
        }
        throw .unavailable("more than \(Self.maximumRedirects) redirects")
    }

    /// `ASKING` then the command, on one fresh connection to `node`.
    private func askOnce(_ node: RedisNode, _ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
        let connection = try await RedisConnection.connect(to: settings(for: node), group: group)
        defer { connection.close() }
        _ = try await connection.send(["ASKING"])
        return try await connection.send(command)
    }

    /// The template's AUTH, TLS and timeouts, for `node`.
    private func settings(for node: RedisNode) -> RedisConfiguration {
        var settings = configuration.template
        settings.host = node.host
        settings.port = node.port
        return settings
    }

    private func node(for slot: Int?) throws(RedisError) -> RedisNode {
        let found: RedisNode? = topology.withLock { state in
            if let slot { return state.slots[slot] }
            return state.slots.first { $0 != nil } ?? nil
        }
        guard let found else {
            throw .unavailable("no cluster node serves slot \(slot.map(String.init) ?? "any")")
        }
        return found
    }

    private func pool(for node: RedisNode) throws(RedisError) -> RedisClient {
        let result: RedisClient? = topology.withLock { state in
            if state.closed { return nil }
            if let pool = state.pools[node] { return pool }
            let pool = RedisClient(configuration: settings(for: node), group: group)
            state.pools[node] = pool
            return pool
        }
        guard let result else { throw .unavailable("the client was shut down") }
        return result
    }

    /// `MOVED 3999 127.0.0.1:6381` → (3999, 127.0.0.1:6381).
    static func redirect(_ message: String) -> (Int, RedisNode)? {
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<16_384).contains(slot),
            let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...])
        else { return nil }
        return (slot, RedisNode(host: String(parts[2][..<colon]), port: port))
    }

    // MARK: - Topology

    /// Reads the slot map when none is known, or when `stale` (after a
    /// redirect or a failed node), at most once a second. One read at a
    /// time: callers that arrive meanwhile wait for it rather than find no map.
    private func refreshIfNeeded(stale: Bool) async throws(RedisError) {
        let now = ContinuousClock.now
        let action: Refresh = topology.withLock { state in
            if let running = state.refreshing { return .wait(running) }
            let known = state.slots.contains { $0 != nil }
            let recent = state.lastRefresh.map { now - $0 < .seconds(1) } ?? false
            guard (!known || stale) && !recent else { return .none }
            state.lastRefresh = now
            let masters = Set(state.slots.compactMap { $0 })
            let candidates = configuration.seeds + masters.filter { !configuration.seeds.contains($0) }
            let task = Task { await self.readSlotMap(from: candidates) }
            state.refreshing = task
            return .wait(task)
        }
        guard case .wait(let task) = action else { return }
        let result = await task.value
        topology.withLock { state in
            if state.refreshing == task { state.refreshing = nil }
        }
        try result.get()
    }

    private enum Refresh {
        case none
        case wait(Task<Result<Void, RedisError>, Never>)
    }

    private func readSlotMap(from candidates: [RedisNode]) async -> Result<Void, RedisError> {
        var lastError: RedisError = .unavailable("no cluster node answered CLUSTER SLOTS")
        for candidate in candidates {
            do {
                let reply = try await pool(for: candidate).send(["CLUSTER", "SLOTS"])
                let map = try Self.slotMap(reply, queried: candidate)
                topology.withLock { $0.slots = map }
                return .success(())
            } catch {
                lastError = error
            }
        }
        return .failure(lastError)
    }

    /// The master of every slot from a `CLUSTER SLOTS` reply.
    static func slotMap(_ reply: RESPValue, queried: RedisNode) throws(RedisError) -> [RedisNode?] {
        guard case .array(let ranges?) = reply else { throw .protocolError("CLUSTER SLOTS did not answer an array") }
        var slots = [RedisNode?](repeating: nil, count: 16_384)
        for range in ranges {
            guard case .array(let fields?) = range, fields.count >= 3, let start = fields[0].integer,
                let end = fields[1].integer, 0 <= start, start <= end, end < 16_384,
                case .array(let master?) = fields[2], master.count >= 2, let host = master[0].string,
                let port = master[1].integer
            else { throw .protocolError("CLUSTER SLOTS answered a malformed range") }
            // An empty host means the node that was asked.
            let node = RedisNode(host: host.isEmpty || host == "?" ? queried.host : host, port: Int(port))
            for slot in Int(start)...Int(end) { slots[slot] = node }
        }
        return slots
    }
}
