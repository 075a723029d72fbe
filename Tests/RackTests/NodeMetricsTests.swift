import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

@Suite("Node metrics: Prometheus text on metricsListen, the same counts in the status")
struct NodeMetricsTests {
    @Test("a scrape shows unlocked, epochs, peers, ledger writes and refused handshakes, and the status agrees")
    func scrape() async throws {
        try await withRack(count: 3, network: RackNetwork(metrics: true)) { rack in
            for index in 0..<3 { #expect(rack.members[index].metricsAddress != nil) }
            let port = try #require(rack.members[0].configuration.metricsListen?.port)
            // Before the rack is set up: locked, no epoch.
            try rack.launch(0)
            try await rack.waitUntilAnswering(0)
            let before = try httpGet(port: port, path: "/metrics")
            #expect(before.status == 200)
            #expect(metricValue(before.body, "keyrack_node_unlocked") == 0)
            #expect(metricValue(before.body, "keyrack_node_committed_epoch") == 0)

            let committed = try await setUp(rack, [0, 1, 2], threshold: 2)
            try await rack.waitUntil([0], "connected to both peers") { $0.connected.count == 2 }
            // A connection that is not TLS fails its handshake, and is counted by reason.
            let peerPort = rack.members[0].configuration.listen.port
            let garbage = try #require(connectLoopback(port: peerPort))
            _ = write(garbage, "GET / HTTP/1.0\r\n\r\n", 18)
            var byte: UInt8 = 0
            _ = read(garbage, &byte, 1)
            close(garbage)
            var failed = 0.0
            var text = ""
            let deadline = ContinuousClock.now + .seconds(10)
            repeat {
                text = try httpGet(port: port, path: "/metrics").body
                failed = text.split(separator: "\n")
                    .filter { $0.hasPrefix("keyrack_node_handshakes_failed_total{") }
                    .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
                if failed >= 1 { break }
                try await Task.sleep(for: .milliseconds(50))
            } while ContinuousClock.now < deadline
            #expect(failed == 1)
            #expect(metricValue(text, "keyrack_node_unlocked") == 1)
            #expect(metricValue(text, "keyrack_node_committed_epoch") == Double(committed.epoch.value))
            #expect(metricValue(text, "keyrack_node_unlocked_epoch") == Double(committed.epoch.value))
            #expect(metricValue(text, "keyrack_node_peers_connected") == 2)
            #expect(metricValue(text, "keyrack_node_alarms") == 0)
            #expect(metricValue(text, "keyrack_node_messages_rejected_total") == 0)
            let writes = try #require(metricValue(text, "keyrack_node_ledger_write_seconds_count"))
            #expect(writes >= 1)

            // The status carries the same counts.
            let status = try #require(await rack.statuses([0])[0])
            let counters = try #require(status.counters)
            #expect(counters.handshakesFailed.values.reduce(0, +) == 1)
            #expect(Double(counters.ledgerWrites) >= writes)
            #expect(counters.ledgerWriteSeconds > 0)

            // Anything but GET /metrics is refused plainly.
            #expect(try httpGet(port: port, path: "/").status == 404)
            #expect(try httpGet(port: port, path: "/metrics", method: "POST").status == 405)
        }
    }
}
