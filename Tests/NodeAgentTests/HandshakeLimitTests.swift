import Foundation
import KeyrackTestSupport
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

/// Review finding M5: unauthenticated connections cannot pile up on a listener.
@Suite("Handshake limits: in all and per remote address")
struct HandshakeLimitTests {
    @Test(
        "beyond the per-address and the total limit a connection is closed as it is accepted; slots come back when handshakes end"
    )
    func limits() async throws {
        let rack = try Rack()
        // A deadline far beyond the test's reads: a close seen here is the limit's, not the deadline's.
        let listener = try await PeerTransport.listen(
            host: "127.0.0.1", port: 0, identity: try rack.node("SRV1"), handshakeTimeout: .seconds(60),
            maximumHandshakes: 3, maximumHandshakesPerAddress: 2)
        let serving = Task { try await listener.run { peer in try? await peer.channel.executeThenClose { _, _ in } } }
        defer { serving.cancel() }
        let port = listener.port
        let handshakes = listener.handshakes
        // One connection at a time, each seen by the listener before the next: accepted ones
        // raise the count of handshakes in progress, refused ones are closed.
        let outcomes = try await offCooperativePool { () throws -> [String] in
            func accepted(_ client: RawClient, count: Int) -> RawClient? {
                for _ in 0..<200 {
                    if handshakes.inProgress == count { return client }
                    usleep(50_000)
                }
                return nil
            }
            let first = try #require(accepted(try RawClient(port: port, from: "127.0.0.1"), count: 1))
            let second = try #require(accepted(try RawClient(port: port, from: "127.0.0.1"), count: 2))
            let third = try RawClient(port: port, from: "127.0.0.1")  // a third from one address
            let thirdOutcome = third.waitForClose(seconds: 10)
            let other = try #require(accepted(try RawClient(port: port, from: "127.0.0.2"), count: 3))
            let fifth = try RawClient(port: port, from: "127.0.0.3")  // four in all: over the total
            return [
                thirdOutcome, fifth.waitForClose(seconds: 10), first.waitForClose(seconds: 1),
                second.waitForClose(seconds: 1), other.waitForClose(seconds: 1), "\(handshakes.inProgress)",
            ]
        }
        #expect(outcomes == ["closed", "closed", "open", "open", "open", "3"])
        // The stalled clients are gone (closed on return): their slots come back, and a node gets in.
        var connected: PeerChannel? = nil
        for _ in 0..<50 where connected == nil {
            connected = try? await PeerTransport.connect(host: "127.0.0.1", port: port, identity: try rack.node("CLI1"))
            if connected == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let channel = try #require(connected)
        #expect(channel.peer.serial == "SRV1")
        try await channel.channel.executeThenClose { _, _ in }
        await listener.close()
    }
}
