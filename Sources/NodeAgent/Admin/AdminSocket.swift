import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The admin API's local transport: a Unix socket, mode 0600, so only the
/// node's owner on this machine can drive the node or read a disk key. Each
/// connection carries one request frame and one response frame (4-byte
/// big-endian length, JSON). The network transport is ``AdminNetwork``.
public enum AdminSocket {
    /// How long a client has to send its request once connected; a client
    /// that stalls is disconnected.
    static let requestDeadline: TimeAmount = .seconds(5)

    /// Listens at `path` (replacing a stale socket file) and answers each
    /// request with `handle`. Returns the listener once it is bound.
    ///
    /// The socket is bound inside a fresh 0700 directory beside `path`,
    /// made 0600 there and renamed into place, so it is never accessible to
    /// others, not even between `bind` and `chmod` (review finding L5). The
    /// process umask is not touched (it is process-wide: changing it, even
    /// for an instant, made files other threads created meanwhile
    /// unusable). A stale socket at `path` is replaced; anything else there
    /// is an error.
    static func listen(
        path: String,
        requestDeadline: TimeAmount = requestDeadline,
        handle: @escaping @Sendable (AdminRequest, AdminCaller) async -> AdminResponse
    ) async throws(AdminError) -> AdminListener {
        var existing = stat()
        if lstat(path, &existing) == 0, existing.st_mode & S_IFMT != S_IFSOCK {
            throw AdminError(.socket, "cannot listen on \(path): something other than a socket is there")
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let staging = parent + "/.kr-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        guard mkdir(staging, 0o700) == 0 else {
            throw AdminError(.socket, "cannot create a private directory beside \(path) (errno \(errno))")
        }
        let bound = staging + "/s"
        defer {
            unlink(bound)
            rmdir(staging)
        }
        let server: NIOAsyncChannel<AdminConnection, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: bound) { channel in
                    framed(channel).map { AdminConnection(channel: $0, caller: { .local }) }
                }
        } catch {
            throw AdminError(.socket, "cannot listen on \(path): \(error)")
        }
        guard chmod(bound, 0o600) == 0, rename(bound, path) == 0 else {
            let code = errno
            try? await server.channel.close()
            throw AdminError(.socket, "cannot put the private socket at \(path) (errno \(code))")
        }
        return AdminListener(server: server, requestDeadline: requestDeadline, idleTimeout: nil, handle: handle)
    }

    /// Frames (the peers' 4-byte length prefix) both ways on `channel`.
    static func framed(_ channel: any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
            try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
            return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
    }

    /// Sends `request` to the node whose admin socket is `path`.
    public static func call(
        _ request: AdminRequest,
        path: String,
        timeout: Duration = .seconds(10)
    ) async throws(AdminError) -> AdminResponse {
        let unreachable = { (detail: String) in
            AdminError(.unreachable, "cannot reach the node at \(path): \(detail)")
        }
        let body: Data
        do {
            body = try JSONEncoder().encode(request)
        } catch {
            throw AdminError(.request, "cannot encode the request: \(error)")
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: path) { channel in
                    framed(channel)
                }
        } catch {
            throw unreachable("\(error)")
        }
        let reply: ByteBuffer?
        do {
            reply = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask {
                    try await channel.executeThenClose { inbound, outbound in
                        try await outbound.write(ByteBuffer(bytes: body))
                        var iterator = inbound.makeAsyncIterator()
                        return try await iterator.next()
                    }
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    channel.channel.close(promise: nil)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first
            }
        } catch {
            throw unreachable("\(error)")
        }
        guard let reply else { throw unreachable("no answer within \(timeout)") }
        do {
            return try JSONDecoder().decode(AdminResponse.self, from: Data(reply.readableBytesView))
        } catch {
            throw AdminError(.response, "the node at \(path) answered something unreadable")
        }
    }

    /// Sends `request` and returns the response, or throws the node's error.
    public static func perform(_ request: AdminRequest, path: String) async throws(AdminError) -> AdminResponse {
        let response = try await call(request, path: path)
        if let error = response.error { throw error }
        return response
    }
}

/// One accepted admin connection and who is on the other end (known once
/// the TLS handshake, if any, has verified the caller's certificate).
struct AdminConnection: Sendable {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let caller: @Sendable () -> AdminCaller?
}

/// A bound admin listener: the Unix socket, or the network one.
struct AdminListener: Sendable {
    let server: NIOAsyncChannel<AdminConnection, Never>
    /// A connection whose first request has not arrived by then (TLS
    /// handshake included) is closed.
    let requestDeadline: TimeAmount
    /// A connection idle this long after an answer is closed; `nil`: a
    /// connection carries one request (the Unix socket).
    let idleTimeout: TimeAmount?
    let handle: @Sendable (AdminRequest, AdminCaller) async -> AdminResponse

    /// The port a network listener is bound to.
    var port: Int { server.channel.localAddress?.port ?? 0 }

    /// Answers requests until the listener closes.
    func run() async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask { await serve(connection) }
                }
            }
        }
    }

    /// Answers one connection's requests in order until it closes, stalls
    /// or idles out.
    private func serve(_ connection: AdminConnection) async {
        let channel = connection.channel.channel
        // On the loop: a client that stalls before a request is disconnected, which ends the read below.
        let deadline = Mutex<Scheduled<Void>?>(
            channel.eventLoop.scheduleTask(in: requestDeadline) { channel.close(promise: nil) })
        try? await connection.channel.executeThenClose { requests, responses in
            for try await frame in requests {
                deadline.withLock { $0?.cancel() }
                let response: AdminResponse
                if let caller = connection.caller() {
                    if let request = try? JSONDecoder().decode(AdminRequest.self, from: Data(frame.readableBytesView)) {
                        response = await handle(request, caller)
                    } else {
                        response = AdminResponse(error: AdminError(.request, "malformed admin request"))
                    }
                } else {
                    response = AdminResponse(error: AdminError(.forbidden, "the caller was not authenticated"))
                }
                let encoded = (try? JSONEncoder().encode(response)) ?? Data()
                try await responses.write(ByteBuffer(bytes: encoded))
                guard let idleTimeout else { return }
                deadline.withLock {
                    $0 = channel.eventLoop.scheduleTask(in: idleTimeout) { channel.close(promise: nil) }
                }
            }
        }
        deadline.withLock { $0?.cancel() }
    }

    func close() async {
        try? await server.channel.close()
    }
}
