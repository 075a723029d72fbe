import NIOCore
import NIOHTTPTypes
import Synchronization

/// The open connections of one server, bounded by `MAX_CONNECTIONS`.
public final class ConnectionLimiter: Sendable {
    /// The most connections open at once.
    public let maximum: Int
    private let open = Atomic<Int>(0)
    private let refusedCount = Atomic<Int>(0)
    private let timedOutCount = Atomic<Int>(0)

    public init(maximum: Int) { self.maximum = maximum }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
    /// Connections closed at accept because `maximum` were open.
    public var refused: Int { refusedCount.load(ordering: .relaxed) }
    /// Connections closed because a handshake, a request or the wait for the next one took too long.
    public var timedOut: Int { timedOutCount.load(ordering: .relaxed) }

    func admit() -> Bool {
        if open.wrappingAdd(1, ordering: .relaxed).newValue > maximum {
            open.wrappingSubtract(1, ordering: .relaxed)
            refusedCount.wrappingAdd(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func release() { open.wrappingSubtract(1, ordering: .relaxed) }
    func countTimeout() { timedOutCount.wrappingAdd(1, ordering: .relaxed) }
}

/// Keeps slow and idle clients from holding the server (review M2).
///
/// One per connection, right after the HTTP codec. Past the limiter's
/// maximum the connection is closed as soon as it is accepted. Otherwise a
/// single deadline of `timeout` runs whenever the server waits on the
/// client: from accept through the TLS handshake and the first request's
/// headers and body, and again from each response's end to the next
/// request's end. It is stopped only while a request the client has sent
/// in full is being answered, so a client that drips its handshake,
/// headers or body one byte at a time is closed when the deadline passes,
/// however busy it looks.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limiter: ConnectionLimiter
    private let timeout: TimeAmount
    private var admitted = false
    /// A request's head has arrived and its end not yet.
    private var reading = false
    /// Requests read in full whose response has not ended.
    private var answering = 0
    private var deadline: Scheduled<Void>?

    init(limiter: ConnectionLimiter, timeout: TimeAmount) {
        self.limiter = limiter
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard limiter.admit() else {
            context.close(promise: nil)
            return
        }
        admitted = true
        update(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        if admitted {
            admitted = false
            limiter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: reading = true
        case .body: break
        case .end:
            reading = false
            answering += 1
        }
        update(context)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            answering = max(0, answering - 1)
            update(context)
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    /// Runs the deadline while the server waits on the client, stops it while it answers.
    private func update(_ context: ChannelHandlerContext) {
        let waitingOnClient = reading || answering == 0
        if waitingOnClient {
            // A deadline already running keeps running: dripping bytes does not extend it.
            guard deadline == nil else { return }
            let channel = context.channel
            let limiter = self.limiter
            deadline = context.eventLoop.scheduleTask(in: timeout) {
                limiter.countTimeout()
                channel.close(promise: nil)
            }
        } else {
            deadline?.cancel()
            deadline = nil
        }
    }
}
