import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A pool of connections to one Redis server.
///
/// Commands lease a connection, run, and give it back. Connections are made
/// on demand up to ``RedisConfiguration/maximumConnections``; beyond that,
/// callers wait for one to come back. A connection that fails is dropped,
/// and the next command makes a new one: when the server comes back after
/// an outage the client works again without a restart.
public final class RedisClient: Sendable {
    /// The configuration this pool connects with.
    public let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let state = Mutex(PoolState())
    /// SHA-1 digests the server gave for scripts loaded with `SCRIPT LOAD`.
    private let scriptDigests = Mutex([String: String]())
    /// Pipelined mode: the shared connections (nil until first used or after one closed).
    private let shared: Mutex<[SharedSlot]>
    private let sharedCount: Int
    private let nextShared = Atomic<Int>(0)
    /// The TLS context (`rediss://`), or why it could not be made.
    private let tls: Result<NIOSSLContext?, RedisError>

    private enum SharedSlot {
        case empty
        case connecting([CheckedContinuation<RedisConnection?, Never>])
        case ready(RedisConnection)
    }

    private struct PoolState {
        var idle: [RedisConnection] = []
        var open = 0
        var waiters: [CheckedContinuation<RedisConnection?, Never>] = []
        var closed = false
    }

    /// A pool for `configuration`; no connection is made until the first command.
    public init(
        configuration: RedisConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.group = group
        self.tls = Result { () throws(RedisError) in try RedisConnection.tlsContext(for: configuration) }
        self.sharedCount = max(0, configuration.pipelinedConnections)
        self.shared = Mutex(Array(repeating: SharedSlot.empty, count: max(0, configuration.pipelinedConnections)))
    }

    /// Sends one command on a pooled connection and returns the reply.
    public func send(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
        if sharedCount > 0 { return try await sendPipelined(command) }
        // A pooled connection can close between the lease and the write; the
        // command was then never sent, and one more try on another
        // connection is safe. Any other failure is reported as it is.
        for attempt in 1...2 {
            let connection = try await lease()
            do {
                let reply = try await connection.send(command)
                giveBack(connection)
                return reply
            } catch {
                // A server error reply leaves the connection usable.
                if case .server = error { giveBack(connection) } else { discard(connection) }
                if case .notSent(let reason) = error {
                    if attempt == 1 { continue }
                    throw .unavailable(reason)
                }
                throw error
            }
        }
        throw .unavailable("unreachable")
    }

    /// Runs a Lua script with `EVALSHA`, loading it first (and again after
    /// the server lost it, on `NOSCRIPT`).
    public func evaluate(
        _ script: RedisScript,
        keys: [RESPArgument],
        arguments: [RESPArgument]
    ) async throws(RedisError) -> RESPValue {
        let tail: [RESPArgument] = [.int(keys.count)] + keys + arguments
        let known = scriptDigests.withLock { $0[script.source] }
        let digest: String
        if let known { digest = known } else { digest = try await load(script) }
        do {
            return try await send(["EVALSHA", .string(digest)] + tail)
        } catch .server(let message) where message.hasPrefix("NOSCRIPT") {
            return try await send(["EVALSHA", .string(load(script))] + tail)
        }
    }

    private func load(_ script: RedisScript) async throws(RedisError) -> String {
        guard let digest = try await send(["SCRIPT", "LOAD", .string(script.source)]).string else {
            throw .protocolError("SCRIPT LOAD did not return a digest")
        }
        scriptDigests.withLock { $0[script.source] = digest }
        return digest
    }

    /// Closes every idle connection and refuses further commands.
    public func shutdown() {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.idle = []
                state.waiters = []
            }
            return (state.idle, state.waiters)
        }
        for connection in idle { connection.close() }
        for waiter in waiters { waiter.resume(returning: nil) }
        let sharedConnections: [RedisConnection] = shared.withLock { slots in
            defer { slots = Array(repeating: .empty, count: slots.count) }
            return slots.compactMap { if case .ready(let connection) = $0 { return connection } else { return nil } }
        }
        for connection in sharedConnections { connection.close() }
    }

    // MARK: - Pipelined mode

    private func sendPipelined(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
        let index = nextShared.wrappingAdd(1, ordering: .relaxed).oldValue % sharedCount
        for attempt in 1...2 {
            let connection = try await sharedConnection(index)
            do {
                return try await connection.send(command)
            } catch {
                if case .notSent(let reason) = error {
                    forget(connection, at: index)
                    if attempt == 1 { continue }
                    throw .unavailable(reason)
                }
                if !connection.isActive { forget(connection, at: index) }
                throw error
            }
        }
        throw .unavailable("unreachable")
    }

    /// The shared connection `index`, connecting it if needed (one caller
    /// connects; the others wait for it).
    private func sharedConnection(_ index: Int) async throws(RedisError) -> RedisConnection {
        enum Step {
            case use(RedisConnection)
            case connect
            case closed
        }
        while true {
            if state.withLock({ $0.closed }) { throw .unavailable("the client was shut down") }
            let step: Step? = shared.withLock { slots in
                switch slots[index] {
                case .ready(let connection) where connection.isActive: return .use(connection)
                case .ready, .empty:
                    slots[index] = .connecting([])
                    return .connect
                case .connecting: return nil
                }
            }
            switch step {
            case .use(let connection):
                return connection
            case .connect:
                do {
                    let connection = try await RedisConnection.connect(
                        to: configuration, tlsContext: tls.get(), group: group)
                    let waiters = shared.withLock { slots in
                        defer { slots[index] = .ready(connection) }
                        if case .connecting(let waiters) = slots[index] { return waiters }
                        return []
                    }
                    for waiter in waiters { waiter.resume(returning: connection) }
                    return connection
                } catch {
                    let waiters = shared.withLock { slots in
                        defer { slots[index] = .empty }
                        if case .connecting(let waiters) = slots[index] { return waiters }
                        return []
                    }
                    for waiter in waiters { waiter.resume(returning: nil) }
                    throw error
                }
            case .closed:
                throw .unavailable("the client was shut down")
            case nil:
                let connection: RedisConnection? = await withCheckedContinuation { continuation in
                    let now: Bool = shared.withLock { slots in
                        guard case .connecting(var waiters) = slots[index] else { return true }
                        waiters.append(continuation)
                        slots[index] = .connecting(waiters)
                        return false
                    }
                    if now { continuation.resume(returning: nil) }
                }
                if let connection { return connection }
            // The connection attempt failed or finished meanwhile: decide again.
            }
        }
    }

    private func forget(_ connection: RedisConnection, at index: Int) {
        shared.withLock { slots in
            if case .ready(let current) = slots[index], current === connection { slots[index] = .empty }
        }
        connection.close()
    }

    // MARK: - Pool

    private enum Lease {
        case reuse(RedisConnection)
        case create
        case wait
        case closed
    }

    private func lease() async throws(RedisError) -> RedisConnection {
        while true {
            let decision: Lease = state.withLock { state in
                if state.closed { return .closed }
                while let connection = state.idle.popLast() {
                    if connection.isActive { return .reuse(connection) }
                    state.open -= 1
                }
                if state.open < configuration.maximumConnections {
                    state.open += 1
                    return .create
                }
                return .wait
            }
            switch decision {
            case .closed:
                throw .unavailable("the client was shut down")
            case .reuse(let connection):
                return connection
            case .create:
                do {
                    return try await RedisConnection.connect(to: configuration, tlsContext: tls.get(), group: group)
                } catch {
                    releaseSlot()
                    throw error
                }
            case .wait:
                let handed = await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state in
                        if state.closed || state.open < configuration.maximumConnections || !state.idle.isEmpty {
                            return true
                        }
                        state.waiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume(returning: nil) }
                }
                if let handed { return handed }
            // Otherwise a slot may have freed up: decide again.
            }
        }
    }

    private func giveBack(_ connection: RedisConnection) {
        guard connection.isActive else { return discard(connection) }
        let waiter: CheckedContinuation<RedisConnection?, Never>? = state.withLock { state in
            if state.closed {
                state.open -= 1
                return nil
            }
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(connection)
            return nil
        }
        if let waiter {
            waiter.resume(returning: connection)
        } else if state.withLock({ $0.closed }) {
            connection.close()
        }
    }

    private func discard(_ connection: RedisConnection) {
        connection.close()
        releaseSlot()
    }

    private func releaseSlot() {
        let waiter = state.withLock { state -> CheckedContinuation<RedisConnection?, Never>? in
            state.open -= 1
            return state.waiters.isEmpty ? nil : state.waiters.removeFirst()
        }
        // Wake one waiter to make a connection in the freed slot.
        waiter?.resume(returning: nil)
    }
}

/// A Lua script, run with ``RedisClient/evaluate(_:keys:arguments:)``.
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String

    /// A script from its source.
    public init(_ source: String) { self.source = source }
}
