import NIOCore
import NIOPosix
import NIOSSL

/// Why a Redis command did not produce a reply.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No connection could be made, or it broke: the server is down or unreachable.
    case unavailable(String)
    /// The server did not answer within the command timeout.
    case timeout
    /// The server answered with an error reply (`-ERR …`).
    case server(String)
    /// The reply could not be parsed.
    case protocolError(String)
    /// The connection closed before the command could be written: the
    /// server never saw it, so it is safe to send again.
    case notSent(String)

    public var description: String {
        switch self {
        case .unavailable(let reason): return "Redis unavailable: \(reason)"
        case .timeout: return "Redis did not answer in time"
        case .server(let message): return "Redis error: \(message)"
        case .protocolError(let reason): return "Redis protocol error: \(reason)"
        case .notSent(let reason): return "Redis unavailable: \(reason)"
        }
    }
}

/// Turns bytes into replies.
struct RESPReplyDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try RESPParser.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

/// Matches replies to commands in order (Redis answers in order) and fails
/// every outstanding command when the connection ends.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = (command: [RESPArgument], promise: EventLoopPromise<RESPValue>)
    typealias OutboundOut = ByteBuffer

    private var waiting = CircularBuffer<EventLoopPromise<RESPValue>>()
    private var failure: RedisError?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let (command, reply) = unwrapOutboundIn(data)
        if let failure {
            reply.fail(failure)
            promise?.fail(failure)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPParser.writeCommand(command, into: &buffer)
        waiting.append(reply)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard let reply = waiting.popFirst() else {
            // A reply nobody asked for: the stream is out of step; close.
            fail(with: .protocolError("unsolicited reply"), context: context)
            return
        }
        reply.succeed(value)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let decoding = error as? RESPDecodingError {
            fail(with: .protocolError(decoding.reason), context: context)
        } else {
            fail(with: .unavailable("\(error)"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(with: .unavailable("connection closed"), context: nil)
        context.fireChannelInactive()
    }

    private func fail(with error: RedisError, context: ChannelHandlerContext?) {
        if failure == nil { failure = error }
        while let reply = waiting.popFirst() { reply.fail(error) }
        context?.close(promise: nil)
    }
}

/// One connection to a Redis server. Commands may be sent concurrently;
/// they are pipelined and their replies matched in order. A command that
/// times out closes the connection (later replies could no longer be matched).
public final class RedisConnection: Sendable {
    let channel: any Channel
    let commandTimeout: TimeAmount

    private init(channel: any Channel, commandTimeout: TimeAmount) {
        self.channel = channel
        self.commandTimeout = commandTimeout
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// The TLS context for `configuration` (nil without TLS), made once per client.
    static func tlsContext(for configuration: RedisConfiguration) throws(RedisError) -> NIOSSLContext? {
        guard configuration.tls else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let file = configuration.caCertificateFile {
            do {
                let roots = try NIOSSLCertificate.fromPEMFile(file)
                guard !roots.isEmpty else { throw RedisError.unavailable("REDIS_CA_CERT \(file) holds no certificate") }
                tls.trustRoots = .certificates(roots)
            } catch let error as RedisError {
                throw error
            } catch {
                throw .unavailable("REDIS_CA_CERT \(file): cannot read PEM certificates: \(error)")
            }
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw .unavailable("cannot set up TLS for Redis: \(error)")
        }
    }

    /// Connects (over TLS when `tlsContext` is given), authenticates and
    /// selects the database of `configuration`.
    public static func connect(
        to configuration: RedisConfiguration,
        tlsContext: NIOSSLContext? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(RedisError) -> RedisConnection {
        var made = tlsContext
        if configuration.tls && made == nil { made = try Self.tlsContext(for: configuration) }
        let context = made
        // The certificate must name the host: an address is checked as an IP SAN.
        let serverName = isAddress(configuration.host) ? nil : configuration.host
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let context {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: context, serverHostname: serverName))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPReplyDecoder()))
                        try channel.pipeline.syncOperations.addHandler(RedisCommandHandler())
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .get()
        } catch {
            throw .unavailable("cannot connect to \(configuration.host):\(configuration.port): \(error)")
        }
        let connection = RedisConnection(channel: channel, commandTimeout: configuration.commandTimeout)
        do {
            if let password = configuration.password {
                var auth: [RESPArgument] = ["AUTH"]
                if let user = configuration.user { auth.append(.string(user)) }
                auth.append(.string(password))
                _ = try await connection.send(auth)
            }
            if configuration.database != 0 {
                _ = try await connection.send(["SELECT", .int(configuration.database)])
            }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply. An error reply is thrown
    /// as ``RedisError/server(_:)``.
    public func send(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let timeout = channel.eventLoop.scheduleTask(in: commandTimeout) {
            promise.fail(RedisError.timeout)
        }
        // Close only if the timeout is what ended the command: a reply that
        // won the race leaves the connection healthy.
        promise.futureResult.whenFailure { [channel] error in
            if case RedisError.timeout = error { channel.close(promise: nil) }
        }
        // A write that cannot happen (the connection closed) fails the reply
        // at once rather than at the timeout.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            promise.fail(RedisError.notSent("write failed: \(error)"))
        }
        channel.writeAndFlush((command: command, promise: promise), promise: written)
        let value: RESPValue
        do {
            value = try await promise.futureResult.get()
            timeout.cancel()
        } catch let error as RedisError {
            timeout.cancel()
            throw error
        } catch {
            timeout.cancel()
            throw .unavailable("\(error)")
        }
        if case .error(let message) = value { throw .server(message) }
        return value
    }

    /// Closes the connection; outstanding commands fail.
    public func close() {
        channel.close(promise: nil)
    }

    private static func isAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
