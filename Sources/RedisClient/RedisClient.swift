import NIOCore
import NIOPosix
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
    }

    /// Sends one command on a pooled connection and returns the reply.
    public func send(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
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
                    return try await RedisConnection.connect(to: configuration, group: group)
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
