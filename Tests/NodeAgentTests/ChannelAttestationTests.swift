import Attestation
import Foundation
import KeyrackCore
import KeyrackTestSupport
import NIOCore
import SecretSharing
import Testing
import TrustQuorum

@testable import NodeAgent

@Suite("Attestation between nodes, inside real TLS channels over loopback")
struct ChannelAttestationTests {
    @Test(
        "software root-of-trust evidence is accepted both ways, and frames flow afterwards",
        arguments: DeviceKeyType.allCases)
    func softwareAccepted(keyType: DeviceKeyType) async throws {
        let rack = try Rack()
        let policy = try softwarePolicy()
        let node = try rack.softwareNode("SRV1", keyType: keyType, policy: policy)
        #expect(try node.attestor.prepare() == (try MeasurementLog.current(cacheDirectory: measurementCache)))
        let result = try await runExchange(
            server: node,
            client: try rack.softwareNode("CLI2", keyType: keyType, policy: policy))
        let server = try result.server.get()
        let client = try result.client.get()
        #expect(server.peer == PlatformId(part: "913-0000019", serial: "CLI2"))
        #expect(client.peer == PlatformId(part: "913-0000019", serial: "SRV1"))
        #expect(server.evidenceKind == .softwareRootOfTrust && client.evidenceKind == .softwareRootOfTrust)
        #expect(server.isCompliant && client.isCompliant && server.mode == .enforce)
        #expect(result.echo == "ack:ping")
    }

    @Test("TDX evidence from the software TEE is accepted both ways", arguments: DeviceKeyType.allCases)
    func tdxAccepted(keyType: DeviceKeyType) async throws {
        let rack = try Rack()
        let tee = try rack.softwareTEE()
        let policy = try tdxPolicy(tee)
        let result = try await runExchange(
            server: try rack.tdxNode("SRV1", keyType: keyType, tee: tee, policy: policy),
            client: try rack.tdxNode("CLI2", keyType: keyType, tee: tee, policy: policy))
        let server = try result.server.get()
        #expect(server.evidenceKind == .tdxQuote && server.isCompliant)
        #expect(try result.client.get().evidenceKind == .tdxQuote)
        #expect(result.echo == "ack:ping")
    }

    @Test(
        "a TDX policy with a PCCS: collateral fetched once for many handshakes; down with nothing cached, the peer is refused"
    )
    func tdxFromPCCS() async throws {
        let rack = try Rack()
        let tee = try rack.softwareTEE()
        let pccs = try PCCSStandIn(collateral: tee.collateral)
        defer { pccs.stop() }
        let policy = try tdxPolicy(tee, pccs: pccs.url)
        #expect(try #require(policy.tdx).collateralDirectory == nil, "the policy reads a directory, not the PCCS")
        for round in 1...2 {
            let result = try await runExchange(
                server: try rack.tdxNode("SRV\(round)", tee: tee, policy: policy),
                client: try rack.tdxNode("CLI\(round)", tee: tee, policy: policy))
            #expect(try result.server.get().isCompliant)
            #expect(try result.client.get().isCompliant)
            #expect(result.echo == "ack:ping")
        }
        // Four appraisals, one fetch of each collateral item.
        #expect(pccs.tcbInfoRequests == 1)
        #expect(pccs.requests("/tdx/certification/v4/qe/identity") == 1)
        // A node that starts while the PCCS is down has nothing cached: the peer is refused, saying why.
        pccs.set(.down)
        let result = try await runExchange(
            server: try rack.tdxNode("SRV3", tee: tee, policy: try tdxPolicy(tee, pccs: pccs.url)),
            client: try rack.tdxNode("CLI3", tee: tee, policy: policy))
        let refusal = try #require(result.serverError)
        #expect(result.serverCode == .refused)
        #expect(refusal.contains("TDX quote verification") && refusal.contains("the PCCS fetch failed"), "\(refusal)")
        #expect(result.echo == nil)
        // One more fetch, by the new node (it stops at the first item, the PCK CRL, answered 503); the
        // client's policy had the collateral cached and asked nothing.
        #expect(pccs.requests("/sgx/certification/v4/pckcrl") == 2)
        #expect(pccs.tcbInfoRequests == 1)
    }

    @Test("an attestor prints neither the device key nor the software TEE's keys")
    func redacted() throws {
        let rack = try Rack()
        let tee = try rack.softwareTEE()
        let attestor = ChannelAttestor(
            rootOfTrust: try SoftwareRootOfTrust(seed: SecretBytes(Array(repeating: 0xAB, count: 32))),
            evidence: .tdxQuote(SoftwareTEEQuoteProvider(tee: tee)), policy: try tdxPolicy(tee))
        let state = try JSONSerialization.jsonObject(
            with: Data(contentsOf: tee.directory.appendingPathComponent("tee.json")))
        let keys = try ["pckKey", "attestationKey"].map { try #require((state as? [String: Any])?[$0] as? String) }
        for text in ["\(attestor)", String(reflecting: attestor)] {
            #expect(text.contains("TDX quotes from the software TEE"))
            #expect(!text.lowercased().contains("abab") && !text.contains("171, 171"))
            for key in keys { #expect(!text.lowercased().contains(key.lowercased().prefix(16))) }
        }
    }

    @Test("a measurement outside the policy is refused, and both sides name the rule")
    func outsidePolicy() async throws {
        let rack = try Rack()
        let result = try await runExchange(
            server: try rack.softwareNode("SRV1", policy: otherBuildPolicy()),
            client: try rack.softwareNode("CLI2", policy: try softwarePolicy()))
        let server = try #require(result.serverError)
        let client = try #require(result.clientError)
        #expect(result.serverCode == .refused && result.clientCode == .refusedByPeer)
        #expect(server.contains("913-0000019:CLI2") && server.contains("measurement 'executable'"))
        #expect(client.contains("measurement 'executable'"))
        // The allowlist is never echoed.
        #expect(!server.contains(otherBuildDigest.hexString) && !client.contains(otherBuildDigest.hexString))
        #expect(result.echo == nil)
    }

    @Test("permissive mode lets the peer through, reports the violation, and warns at start-up")
    func permissive() async throws {
        let rack = try Rack()
        let server = try rack.softwareNode("SRV1", policy: otherBuildPolicy(mode: .permissive))
        let result = try await runExchange(
            server: server, client: try rack.softwareNode("CLI2", policy: try softwarePolicy()))
        let outcome = try result.server.get()
        #expect(outcome.mode == .permissive)
        #expect(outcome.violations.map(\.rule) == ["measurement 'executable'"])
        #expect(!outcome.isCompliant && outcome.description.contains("NOT ENFORCED"))
        #expect(try result.client.get().isCompliant)
        #expect(result.echo == "ack:ping")
        #expect(server.attestor.startupWarning?.contains("NOT ENFORCED") == true)
        #expect(try softwarePolicy().startupWarning == nil)
    }

    @Test(
        "a TD whose MRTD is outside the policy is refused naming MRTD (let through and reported when permissive)",
        arguments: [AttestationMode.enforce, .permissive])
    func tdxMRTD(mode: AttestationMode) async throws {
        let rack = try Rack()
        let tee = try rack.softwareTEE()
        var other = tee.defaultMeasurements
        other.mrTD = [UInt8](repeating: 0x42, count: 48)
        let result = try await runExchange(
            server: try rack.tdxNode("SRV1", tee: tee, policy: try tdxPolicy(tee, mode: mode)),
            client: try rack.tdxNode("CLI2", tee: tee, measurements: other, policy: try tdxPolicy(tee)))
        switch mode {
        case .enforce:
            #expect(result.serverCode == .refused && result.clientCode == .refusedByPeer)
            #expect(try #require(result.serverError).contains("MRTD"))
            #expect(try #require(result.clientError).contains(": MRTD"))
        case .permissive:
            let outcome = try result.server.get()
            #expect(outcome.violations.map(\.rule) == ["MRTD"])
            #expect(outcome.violations.first?.detail.contains(other.mrTD.hexString) == true)
            #expect(result.echo == "ack:ping")
        }
    }

    @Test("a TDX quote is refused by a node whose policy has no TDX section")
    func tdxNotAccepted() async throws {
        let rack = try Rack()
        let tee = try rack.softwareTEE()
        let result = try await runExchange(
            server: try rack.softwareNode("SRV1", policy: try softwarePolicy(mode: .permissive)),
            client: try rack.tdxNode("CLI2", tee: tee, policy: try softwarePolicy()))
        #expect(result.serverCode == .refused)
        #expect(try #require(result.serverError).contains("evidence kind"))
    }

    @Test("a node that cannot produce its evidence aborts, and the peer's error says so")
    func cannotMeasure() async throws {
        let rack = try Rack()
        let broken = [MeasuredFile(name: "executable", path: rack.directory.appendingPathComponent("gone").path)]
        let result = try await runExchange(
            server: try rack.softwareNode("SRV1", policy: try softwarePolicy()),
            client: try rack.softwareNode("CLI2", policy: try softwarePolicy(), files: broken))
        #expect(result.clientCode == .aborted)
        #expect(try #require(result.clientError).contains("it could not produce its evidence: cannot open"))
        let unmeasured = #expect(throws: NodeEvidenceError.self) {
            try rack.softwareNode("CLI3", policy: try softwarePolicy(), files: broken).attestor.prepare()
        }
        #expect(unmeasured?.code == .measure)
        #expect(result.serverCode == .abortedByPeer)
        #expect(try #require(result.serverError).contains("913-0000019:CLI2"))
    }

    @Test("outside a TD, the configfs-tsm quote provider says so")
    func noConfigfsTSM() {
        let provider = ConfigfsTSMQuoteProvider(root: "/nonexistent/tsm/report")
        let error = #expect(throws: NodeEvidenceError.self) {
            try provider.quote(reportData: Array(repeating: 0, count: 64))
        }
        #expect(error?.code == .notInTD)
    }

    @Test("an evidence frame replayed from another session is refused on the channel binding")
    func replay() async throws {
        let rack = try Rack()
        let policy = try softwarePolicy()
        let server = try rack.softwareNode("SRV1", policy: policy)
        let client = try rack.softwareNode("CLI2", policy: policy)

        // Session 1: a recorder with the server's identity keeps the client's evidence frame.
        let recorder = try await PeerTransport.listen(host: "127.0.0.1", port: 0, identity: server.identity)
        let (recorded, sink) = AsyncStream<ByteBuffer>.makeStream()
        let recording = Task {
            try await recorder.run { peer in
                try? await peer.channel.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    try await outbound.write(AttestationFrame.nonce(Array(repeating: 7, count: 32)).buffer)
                    _ = try await iterator.next()  // the client's nonce
                    if let evidence = try await iterator.next() { sink.yield(evidence) }
                }
            }
        }
        defer { recording.cancel() }
        let first = try await PeerTransport.connect(host: "127.0.0.1", port: recorder.port, identity: client.identity)
        try await first.channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            _ = try? await client.attestor.attest(first, inbound: &iterator, outbound: outbound)
        }
        var recordedIterator = recorded.makeAsyncIterator()
        let evidence = try #require(await recordedIterator.next())
        guard case .evidence = try AttestationFrame(parsing: evidence) else {
            Issue.record("the recorder did not capture an evidence frame")
            return
        }
        await recorder.close()

        // Session 2: the same client identity replays it to the genuine server.
        let (serverResult, seen) = try await runScripted(server: server, client: client.identity) {
            _, inbound, outbound in
            try await outbound.write(AttestationFrame.nonce(Array(repeating: 9, count: 32)).buffer)
            try await outbound.write(evidence)
            return await remainingFrames(&inbound)
        }
        guard case .failure(let error) = serverResult else {
            Issue.record("the replayed evidence was accepted")
            return
        }
        #expect(error.code == .refused && error.reason.contains("channel binding"))
        #expect(
            seen.contains { if case .refused(let reason) = $0 { reason.contains("channel binding") } else { false } })
    }

    /// What a misbehaving client sends after reading the server's nonce.
    enum Misbehaviour: String, CaseIterable, Sendable {
        case garbage, truncatedNonce, truncatedEvidence, nothing

        var frames: [ByteBuffer] {
            let header = AttestationFrame.magic + [AttestationFrame.version]
            switch self {
            case .garbage: return [ByteBuffer(string: "GET / HTTP/1.1")]
            case .truncatedNonce: return [ByteBuffer(bytes: header + [1] + Array(repeating: 1, count: 10))]
            case .truncatedEvidence:
                return [
                    AttestationFrame.nonce(Array(repeating: 1, count: 32)).buffer,
                    ByteBuffer(bytes: header + [2, 1] + Array(repeating: 0, count: 40)),
                ]
            case .nothing: return []
            }
        }
    }

    @Test("a peer that sends garbage, a truncated frame or nothing is refused", arguments: Misbehaviour.allCases)
    func misbehaving(_ misbehaviour: Misbehaviour) async throws {
        let rack = try Rack()
        let server = try rack.softwareNode(
            "SRV1", policy: try softwarePolicy(), timeout: misbehaviour == .nothing ? .milliseconds(500) : testTimeout)
        let intruder = try rack.node("CLI2")
        let (serverResult, seen) = try await runScripted(server: server, client: intruder) { _, inbound, outbound in
            for frame in misbehaviour.frames { try await outbound.write(frame) }
            return await remainingFrames(&inbound)
        }
        let error = try #require(serverResult.failure, "the misbehaving peer was accepted")
        switch misbehaviour {
        case .nothing:
            #expect(error.code == .timeout && error.reason.contains("nonce"))
        default:
            #expect(error.code == .refused && error.reason.contains("malformed attestation frame"))
            #expect(seen.contains { if case .refused(let reason) = $0 { reason.contains("malformed") } else { false } })
        }
    }

    @Test("the exchange's deadline runs on the attestor's clock: a silent peer is refused when it passes, not before")
    func deadlineOnClock() async throws {
        let rack = try Rack()
        let clock = ManualClock()
        let server = try rack.softwareNode("SRV1", policy: try softwarePolicy(), timeout: .seconds(20), clock: clock)
        let intruder = try rack.node("CLI2")
        let (serverResult, seen) = try await runScripted(server: server, client: intruder) { _, inbound, _ in
            // The server sent its nonce and waits for ours, which never comes.
            try await clock.waitForSleepers(1)
            clock.advance(by: .seconds(19))
            let stillWaiting = clock.sleeperCount
            clock.advance(by: .seconds(1))
            let frames = await remainingFrames(&inbound)
            return stillWaiting == 1 ? frames : []
        }
        let error = try #require(serverResult.failure, "a silent peer was accepted")
        #expect(error.code == .timeout && error.reason.contains("nonce"), "\(error)")
        // The deadline had not passed at 19 s (else no frame is returned), and at 20 s the peer was told why.
        #expect(seen.contains { if case .aborted(let reason) = $0 { reason.contains("timed out") } else { false } })
    }
}
