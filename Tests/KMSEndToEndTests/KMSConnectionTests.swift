import Foundation
import KMSClient
import KeyRelease
import KeyReleaseServer
import KeyrackTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A plain TCP connection driven byte by byte, as a slow or hostile client.
final class RawConnection: @unchecked Sendable {
    let descriptor: Int32

    init(port: Int) throws {
        guard let descriptor = connectLoopback(port: port) else {
            throw TestSupportError("cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        self.descriptor = descriptor
    }

    /// Sends `text`; false when the server has closed the connection.
    @discardableResult
    func send(_ text: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } > 0
    }

    /// Whether the server closed the connection (end of file or a reset)
    /// within `milliseconds`; whatever it answered before is read and dropped.
    func closedByServer(within milliseconds: Int32) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(milliseconds)
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while true {
            let left = deadline - ContinuousClock.now
            let wait = max(
                0, Int32(left.components.seconds * 1_000 + left.components.attoseconds / 1_000_000_000_000_000))
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, wait) == 1 else { return false }
            let got = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR) { return true }
        }
    }

    deinit { close(descriptor) }
}

@Suite("KMS connections: slow clients, idle clients, too many clients", .serialized)
struct KMSConnectionTests {
    @Test(
        "300 stalled connections (silent, dripping headers, dripping a body): a real client is served, all are closed")
    func stalledClients() async throws {
        raiseOpenFileLimit()
        let platform = try Platform()
        let kms = try await KMS.start(platform, extra: ["IDLE_TIMEOUT_SECS": "5"])
        var stalled: [RawConnection] = []
        for index in 0..<300 {
            let connection = try RawConnection(port: kms.port)
            switch index % 3 {
            case 0: break  // says nothing at all
            case 1: connection.send("POST /challenge HTTP/1.1\r\nHost: kms\r\n")  // headers, never finished
            default:  // headers in full, then a body that never arrives in full
                connection.send("POST /challenge HTTP/1.1\r\nHost: kms\r\nContent-Length: 100\r\n\r\n{\"peerId\":")
            }
            stalled.append(connection)
        }
        let start = ContinuousClock.now
        // Drip a byte every 300 ms on the dripping ones: activity must not extend the deadline.
        let dripper = Task {
            for _ in 0..<30 {
                try await Task.sleep(for: .milliseconds(300))
                for (index, connection) in stalled.enumerated() where index % 3 != 0 { connection.send("x") }
            }
        }
        defer { dripper.cancel() }
        // A real node is served meanwhile.
        let key = try await KeyReleaseClient(
            endpoint: kms.endpoint, identity: .generate(), quotes: SoftwareTEEQuoteSource(tee: platform.tee)
        ).fetchKey()
        #expect(key.count == 32)
        // Served before the stalled connections' deadline: it did not wait for them to be cut.
        let served = ContinuousClock.now - start
        #expect(served < .seconds(5), "the real client waited behind the stalled ones (\(served))")
        // Every stalled connection is closed by the server, soon after the deadline.
        var open = 0
        for connection in stalled where !connection.closedByServer(within: 6_000) { open += 1 }
        #expect(open == 0, "\(open) stalled connections still open")
        #expect(ContinuousClock.now - start < .seconds(15))
        let metrics = try await kms.send(.get, "/metrics", json: "").text
        #expect((metricValue(metrics, "keyrack_kms_connections_timed_out_total") ?? 0) >= 300, "\(metrics)")
    }

    @Test("an idle keep-alive connection is closed after IDLE_TIMEOUT_SECS; one answered in time is reused")
    func idleKeepAlive() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform, extra: ["IDLE_TIMEOUT_SECS": "1"])
        let connection = try RawConnection(port: kms.port)
        connection.send("GET /healthz HTTP/1.1\r\nHost: kms\r\n\r\n")
        #expect(!connection.closedByServer(within: 500), "closed right after answering")
        connection.send("GET /healthz HTTP/1.1\r\nHost: kms\r\n\r\n")
        #expect(!connection.closedByServer(within: 300))
        // Then nothing: closed once the idle deadline passes.
        var waited = 0
        while waited < 3_000, !connection.closedByServer(within: 100) { waited += 100 }
        #expect(waited >= 500 && waited < 3_000, "closed after \(waited) ms")
    }

    @Test("MAX_CONNECTIONS: the next connection is closed at accept and counted; a place frees when one closes")
    func connectionLimit() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform, extra: ["MAX_CONNECTIONS": "20", "IDLE_TIMEOUT_SECS": "30"])
        // Let the harness's own probe connection go first.
        try await Task.sleep(for: .milliseconds(200))
        var held: [RawConnection] = []
        for _ in 0..<20 { held.append(try RawConnection(port: kms.port)) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(held.allSatisfy { !$0.closedByServer(within: 10) })
        let extra = try RawConnection(port: kms.port)
        #expect(extra.closedByServer(within: 2_000), "a connection past MAX_CONNECTIONS was kept")
        held.removeLast()  // closes one
        try await Task.sleep(for: .milliseconds(200))
        let metrics = try await kms.send(.get, "/metrics", json: "").text
        #expect(metricValue(metrics, "keyrack_kms_connections_refused_total") == 1, "\(metrics)")
        #expect(metricValue(metrics, "keyrack_kms_open_connections") == 20, "\(metrics)")
    }
}
