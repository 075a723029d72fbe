import Foundation
import KeyrackTestSupport
import NIOCore
import Synchronization
import Testing
import TrustQuorum

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

/// The admin API over the network, in process: a real TLS listener with a
/// node's device identity, and the operator's client.
@Suite("The admin API over the network: mutual TLS 1.3, operator certificates only")
struct AdminNetworkTests {
    /// A listener on a free loopback port answering `status` as `platform`,
    /// recording who asked.
    final class FakeNode: Sendable {
        let listener: AdminListener
        let log = CallerLog()
        let serving: Task<Void, Never>
        var address: PeerAddress { PeerAddress(host: "127.0.0.1", port: listener.port) }

        init(rack: Rack, serial: String, reporting platform: PlatformId? = nil, deadline: TimeAmount = .seconds(5))
            async throws
        {
            let identity = try rack.node(serial)
            let reported = platform ?? PlatformId(part: "913-0000019", serial: serial)
            let operators = try OperatorCertificateVerifier(intermediate: rack.ca.intermediate, root: rack.ca.root)
            let log = log
            listener = try await AdminNetwork.listen(
                on: PeerAddress(host: "127.0.0.1", port: 0), identity: identity, operators: operators,
                requestDeadline: deadline
            ) { request, caller in
                log.callers.withLock { $0.append(caller) }
                guard request.operation == .status else { return AdminResponse(error: AdminError(.forbidden, "no")) }
                return AdminResponse(status: fakeStatus(reported))
            }
            let listener = listener
            serving = Task { try? await listener.run() }
        }

        func stop() async {
            await listener.close()
            serving.cancel()
        }
    }

    static func credentials(_ rack: Rack, issuer: ManufacturingCA? = nil, name: String = "alice") throws
        -> AdminCredentials
    {
        let ca = issuer ?? rack.ca
        let identity = try OperatorIdentity.create(
            in: rack.directory.appendingPathComponent("operator-\(UUID().uuidString)"), ca: ca, name: name)
        // The client judges nodes by the rack's CA, whoever issued its own certificate.
        return try AdminCredentials(identity: identity, intermediate: rack.ca.intermediate, root: rack.ca.root)
    }

    @Test("an operator's requests reach the node as that operator, several on one kept connection")
    func operatorRequests() async throws {
        let rack = try Rack()
        let node = try await FakeNode(rack: rack, serial: "ADM1")
        let client = AdminClient(credentials: try Self.credentials(rack))
        for _ in 0..<5 {
            let status = try await client.perform(AdminRequest(.status), at: .network(node.address)).status
            #expect(status?.platform == PlatformId(part: "913-0000019", serial: "ADM1"))
        }
        let callers = node.log.callers.withLock { $0 }
        #expect(callers.count == 5)
        // One connection (one source port) carried all five.
        #expect(Set(callers.map(\.description)).count == 1)
        guard case .networkOperator(let name, let from) = try #require(callers.first) else {
            Issue.record("the caller is not a network operator: \(callers)")
            return
        }
        #expect(name == "alice" && from.hasPrefix("127.0.0.1:"))
        // The node's own refusal comes back as its error.
        let refused = await #expect(throws: AdminError.self) {
            try await client.perform(AdminRequest(.diskKey, disk: "data0"), at: .network(node.address))
        }
        #expect(refused?.code == .forbidden)
        await client.close()
        await node.stop()
    }

    @Test("an operator certificate from another CA, and a client with none, never reach the handler")
    func strangersRefused() async throws {
        let rack = try Rack()
        let node = try await FakeNode(rack: rack, serial: "ADM2")
        let other = try ManufacturingCA.create(in: rack.directory.appendingPathComponent("other-ca"))
        let stranger = AdminClient(credentials: try Self.credentials(rack, issuer: other, name: "mallory"))
        let refused = await #expect(throws: AdminError.self) {
            try await stranger.perform(AdminRequest(.status), at: .network(node.address))
        }
        #expect(refused?.code == .unreachable)
        let anonymous = await #expect(throws: AdminError.self) {
            try await AdminClient().perform(AdminRequest(.status), at: .network(node.address))
        }
        #expect(anonymous?.code == .authentication)
        #expect(anonymous?.reason.contains("--operator") == true)
        #expect(node.log.callers.withLock { $0.isEmpty })
        await node.stop()
    }

    @Test("a node is known by its certificate: one that reports another platform is not believed")
    func lyingNode() async throws {
        let rack = try Rack()
        let node = try await FakeNode(
            rack: rack, serial: "ADM3", reporting: PlatformId(part: "913-0000019", serial: "OTHER"))
        let client = AdminClient(credentials: try Self.credentials(rack))
        let lie = await #expect(throws: AdminError.self) {
            try await client.perform(AdminRequest(.status), at: .network(node.address))
        }
        #expect(lie?.code == .authentication)
        #expect(lie?.reason.contains("913-0000019:ADM3") == true)
        await node.stop()
    }

    @Test("a node whose certificate is not from the operator's CA is refused by the operator")
    func foreignNode() async throws {
        let rack = try Rack()
        let other = try Rack()
        let node = try await FakeNode(rack: other, serial: "ADM4")
        // Alice trusts `rack`'s CA; the node is `other`'s and would not admit her either.
        let client = AdminClient(credentials: try Self.credentials(rack))
        let refused = await #expect(throws: AdminError.self) {
            try await client.perform(AdminRequest(.status), at: .network(node.address))
        }
        #expect(refused?.code == .unreachable)
        #expect(refused?.reason.contains("certificate is refused") == true)
        await node.stop()
    }

    @Test("a client that connects and sends nothing is disconnected at the request deadline")
    func stalledClient() async throws {
        let rack = try Rack()
        let node = try await FakeNode(rack: rack, serial: "ADM5", deadline: .milliseconds(500))
        let descriptor = try #require(connectLoopback(port: node.listener.port))
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let started = ContinuousClock.now
        var byte: UInt8 = 0
        let got = read(descriptor, &byte, 1)
        #expect(got == 0, "the stalled connection was closed (EOF), not timed out by the test")
        #expect(ContinuousClock.now - started < .seconds(8))
        await node.stop()
    }

    @Test("entries of --nodes: host:port is an address, anything else a socket path")
    func endpointParsing() {
        #expect(AdminEndpoint(parsing: "10.77.0.11:7101") == .network(PeerAddress(host: "10.77.0.11", port: 7101)))
        #expect(AdminEndpoint(parsing: "[fd00::1]:7101") == .network(PeerAddress(host: "fd00::1", port: 7101)))
        #expect(AdminEndpoint(parsing: "node-1/admin.sock") == .socket("node-1/admin.sock"))
        #expect(AdminEndpoint(parsing: "admin.sock") == .socket("admin.sock"))
        #expect(AdminEndpoint(parsing: "/run/a:1") == .socket("/run/a:1"))
        #expect(AdminEndpoint(parsing: "host:0") == .socket("host:0"))
    }
}

final class CallerLog: Sendable {
    let callers = Mutex<[AdminCaller]>([])
}

/// A status as a node would report it, for `platform`.
func fakeStatus(_ platform: PlatformId) -> NodeStatus {
    NodeStatus(
        platform: platform, rackId: RackId(bytes: Array(repeating: 1, count: RackId.byteCount))!,
        listen: "127.0.0.1:1", latestCommitted: nil, commitSignature: nil, highestEpochSeen: nil,
        unlockedEpoch: nil, secretCheck: nil, computingShareEpoch: nil, coordinating: nil, expunged: nil,
        alarms: [], connected: [], rekey: [], volumes: [], ledgerProblems: [], attestationEnforced: true, rejected: 0)
}
