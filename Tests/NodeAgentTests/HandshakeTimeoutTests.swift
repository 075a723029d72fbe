import Foundation
import KeyrackTestSupport
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

/// A peer that connects and then stalls is dropped, on either side.
@Suite("Handshake deadline")
struct HandshakeTimeoutTests {
    @Test("a connection that never starts TLS is closed by the listener after the deadline, and never handed on")
    func stalledClientDropped() async throws {
        let rack = try Rack()
        let listener = try await PeerTransport.listen(
            host: "127.0.0.1", port: 0, identity: try rack.node("SRV1"), handshakeTimeout: .milliseconds(300))
        let handed = AsyncStream<Void>.makeStream()
        let serving = Task { try await listener.run { _ in handed.continuation.yield() } }
        let port = listener.port
        // A raw TCP connection that sends nothing; the server must hang up.
        // The blocking read runs on a thread of its own (not on the cooperative
        // pool every async test shares), timed from the connection on.
        let (outcome, closedAfter) = try await offCooperativePool { () throws -> (String, Duration) in
            let client = try RawClient(port: port, from: "127.0.0.1")
            let started = ContinuousClock.now
            let outcome = client.waitForClose(seconds: 20)
            return (outcome, ContinuousClock.now - started)
        }
        #expect(outcome == "closed", "expected the server to close")
        #expect(closedAfter >= .milliseconds(250))
        #expect(closedAfter < .seconds(15))
        await listener.close()
        try await serving.value
        handed.continuation.finish()
        var count = 0
        for await _ in handed.stream { count += 1 }
        #expect(count == 0)
    }

    @Test("a dialled peer that accepts TCP but never answers TLS fails the connect with the deadline's reason")
    func stalledServerFailsConnect() async throws {
        let rack = try Rack()
        // A plain TCP server that accepts and stays silent.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let port = try #require(silent.localAddress?.port)
        let error = await #expect(throws: PeerChannelError.self) {
            _ = try await PeerTransport.connect(
                host: "127.0.0.1", port: port, identity: try rack.node("CLI1"), handshakeTimeout: .milliseconds(300))
        }
        #expect(error?.code == .timeout, "\(String(describing: error))")
    }

    @Test("the handshake deadline runs on the channel's event loop: still open 1 ms before it, failed and closed at it")
    func deadlineOnLoopClock() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let promise = loop.makePromise(of: VerifiedPeer.self)
        let refusal = PeerRefusal()
        refusal.certificateArrived()  // past the certificate deadline: the whole handshake's is what is timed here
        try channel.pipeline.syncOperations.addHandler(
            PeerIdentityHandler(promise: promise, refusal: refusal, deadline: .seconds(20)))
        let outcome = Outcome()
        promise.futureResult.whenComplete { result in outcome.result.withLock { $0 = result } }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()

        loop.advanceTime(by: TimeAmount.seconds(20) - TimeAmount.milliseconds(1))
        #expect(outcome.result.withLock { $0 } == nil)
        #expect(channel.isActive)

        loop.advanceTime(by: .milliseconds(1))
        let result = try #require(outcome.result.withLock { $0 })
        let error = try #require(result.failure as? PeerChannelError)
        #expect(error.reason == "the peer did not complete the TLS handshake and greeting within 20.0 s")
        #expect(!channel.isActive)
    }

    @Test(
        "a peer whose certificate has not arrived 5 s after the connection is dropped then, long before the handshake deadline"
    )
    func certificateDeadline() throws {
        for arrives in [false, true] {
            let loop = EmbeddedEventLoop()
            let channel = EmbeddedChannel(loop: loop)
            let promise = loop.makePromise(of: VerifiedPeer.self)
            let refusal = PeerRefusal()
            try channel.pipeline.syncOperations.addHandler(
                PeerIdentityHandler(promise: promise, refusal: refusal, deadline: .seconds(20)))
            let outcome = Outcome()
            promise.futureResult.whenComplete { result in outcome.result.withLock { $0 = result } }
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            loop.advanceTime(by: .milliseconds(4_999))
            #expect(outcome.result.withLock { $0 } == nil)
            if arrives { refusal.certificateArrived() }
            loop.advanceTime(by: .milliseconds(1))
            if arrives {
                #expect(outcome.result.withLock { $0 } == nil)
                #expect(channel.isActive)
            } else {
                let result = try #require(outcome.result.withLock { $0 })
                let error = try #require(result.failure as? PeerChannelError)
                #expect(error.code == .timeout)
                #expect(error.reason == "the peer sent no certificate within 5.0 s")
                #expect(!channel.isActive)
            }
            _ = try? channel.finish()
        }
    }
}

/// What a promise completed with, read after the loop ran.
private final class Outcome: Sendable {
    let result = Mutex<Result<VerifiedPeer, any Error>?>(nil)
}
