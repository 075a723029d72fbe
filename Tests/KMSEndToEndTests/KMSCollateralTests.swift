import Attestation
import Crypto
import Foundation
import KMSClient
import KeyRelease
import KeyrackTestSupport
import Testing

@Suite("KMS collateral: PCCS_URL against a stand-in PCCS, expiry before a challenge is spent")
struct KMSCollateralTests {
    @Test(
        "PCCS_URL: fetched once, served while the PCCS is down, 503 PolicyNotReady once stale (challenge unspent), /readyz says why"
    )
    func pccs() async throws {
        let platform = try Platform()
        // A platform whose TCB info and QE identity the test re-issues, from keys it keeps. The
        // KMS fetches lazily, so the window is opened only once the KMS is up: collateral valid
        // for 30 seconds from the first fetch (refreshed in its last quarter, as
        // PCCSCollateralCache does), however long a loaded machine took to start the process.
        let keys = TestPKIKeys()
        let teeDirectory = platform.directory.appendingPathComponent("short")
        let tee = try SoftwareTEE.initialize(
            directory: teeDirectory, options: TestPlatformOptions(), now: Int64(Date().timeIntervalSince1970),
            keys: keys)
        let pccs = try PCCSStandIn(collateral: tee.collateral)
        defer { pccs.stop() }
        var environment = platform.environment(port: 0)
        environment["COLLATERAL_DIR"] = nil
        environment["PCCS_URL"] = pccs.url
        environment["TRUST_ANCHOR"] = teeDirectory.appendingPathComponent("root.der").path
        let kms = try await KMS(environment)
        let identity = PeerIdentity.generate()
        let start = Int64(Date().timeIntervalSince1970)
        let short = try Self.reissue(tee.collateral, nextUpdate: start + 30, keys: keys)
        #expect(short.tcbInfo != tee.collateral.tcbInfo)
        pccs.serve(short)

        let first = try await kms.challenge(for: identity)
        let released = try await kms.post("/get-key", try KeyRequest.valid(first, identity: identity, tee: tee).body)
        #expect(released.status == 200, "\(released.text)")
        // Down, still valid: served from the cache, no new fetch.
        pccs.set(.down)
        let second = try await kms.challenge(for: identity)
        let cached = try await kms.post("/get-key", try KeyRequest.valid(second, identity: identity, tee: tee).body)
        #expect(cached.status == 200, "\(cached.text)")
        #expect(pccs.tcbInfoRequests == 1)
        let metrics = try await kms.send(.get, "/metrics", json: "")
        #expect(metrics.text.contains("keyrack_kms_pccs_fetches_total 1\n"))

        // Past nextUpdate and the PCCS still down: not ready, and the challenge is not spent.
        let expiry = start + 31 - Int64(Date().timeIntervalSince1970)
        if expiry > 0 { try await Task.sleep(for: .seconds(expiry)) }
        let third = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(third, identity: identity, tee: tee).body
        let stale = try await kms.post("/get-key", request)
        #expect(stale.status == 503, "\(stale.text)")
        #expect(stale.error?.error == "PolicyNotReady")
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503, "\(ready.text)")
        #expect(ready.text.contains("\"notReady\":[\"collateral\"]"), "\(ready.text)")
        // Why, and the PCCS's address, only in the log (review L7).
        #expect(!ready.text.contains("127.0.0.1") && !stale.text.contains("127.0.0.1"), "\(ready.text) \(stale.text)")
        #expect(kms.process.log.contains("expired"))

        // The PCCS back with fresh collateral: after the retry interval the same challenge is released.
        let renewed = try Self.reissue(tee.collateral, nextUpdate: start + 30 * 86_400, keys: keys)
        pccs.serve(renewed)
        pccs.set(.normal)
        var last: HTTPConnection.Response? = nil
        for _ in 0..<40 where last?.status != 200 {
            last = try await kms.post("/get-key", request)
            if last?.status != 200 { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(last?.status == 200, "\(last?.text ?? "")")
        #expect(try await kms.send(.get, "/readyz", json: "").status == 200)
    }

    @Test(
        "PCCS_URL: an unknown FMSPC and a tampered TCB info are 503 PolicyNotReady with the challenge unspent; 33 releases at once after recovery fetch each item once"
    )
    func pccsUnderLoad() async throws {
        let platform = try Platform()
        // First the PCCS knows only another platform (another FMSPC): the quote's is unknown (404).
        var otherPlatform = TestPlatformOptions()
        otherPlatform.tcbLevels = #"{"tcbInfo": {"fmspc": "AABBCCDDEEFF"}}"#
        let pccs = try PCCSStandIn(
            collateral: try TestPKI(
                keys: TestPKIKeys(), options: otherPlatform, now: Int64(Date().timeIntervalSince1970)
            )
            .collateral)
        defer { pccs.stop() }
        var environment = platform.environment(port: 0)
        environment["COLLATERAL_DIR"] = nil
        environment["PCCS_URL"] = pccs.url
        let kms = try await KMS(environment)
        let identity = PeerIdentity.generate()
        let refusedChallenge = try await kms.challenge(for: identity)
        let held = try KeyRequest.valid(refusedChallenge, identity: identity, tee: platform.tee).body
        let unknown = try await kms.post("/get-key", held)
        #expect(unknown.status == 503, "\(unknown.text)")
        #expect(unknown.error?.error == "PolicyNotReady")
        // Why is in the log only; the answer names no host or port (review L7).
        #expect(!unknown.text.contains("127.0.0.1"), "\(unknown.text)")
        var detail = try await kms.lastAuditDetail(after: 0)
        #expect(detail.contains("the PCCS fetch failed") && detail.contains("404"), "\(detail)")

        // Then the platform's collateral, but tampered with; a failed fetch is retried after 5 s, not before.
        pccs.serve(platform.tee.collateral)
        pccs.set(.tamperedTCBInfo)
        let early = try await kms.post("/get-key", held)
        #expect(early.status == 503, "\(early.text)")
        detail = try await kms.lastAuditDetail(after: 1)
        #expect(detail.contains("404"), "retried before the retry interval: \(detail)")
        try await Task.sleep(for: .milliseconds(5_500))
        let refused = try await kms.post("/get-key", held)
        #expect(refused.status == 503, "\(refused.text)")
        #expect(refused.error?.error == "PolicyNotReady")
        detail = try await kms.lastAuditDetail(after: 2)
        #expect(detail.contains("the PCCS fetch failed") && !detail.contains("404"), "\(detail)")

        // The PCCS serves good collateral again.
        pccs.set(.normal)
        try await Task.sleep(for: .milliseconds(5_500))
        let callers = (0..<32).map { _ in PeerIdentity.generate() }
        var requests: [[String: String]] = [held]
        for caller in callers {
            let challenge = try await kms.challenge(for: caller)
            requests.append(try KeyRequest.valid(challenge, identity: caller, tee: platform.tee).body)
        }
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for request in requests { group.addTask { try await kms.post("/get-key", request).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses == [Int](repeating: 200, count: 33), "the challenge refused while not ready was spent?")
        let metrics = Set(try await kms.send(.get, "/metrics", json: "").text.split(separator: "\n").map(String.init))
        #expect(metrics.contains("keyrack_kms_pccs_fetches_total 3"), "two failed fetches, one good one")
        #expect(metrics.contains("keyrack_kms_pccs_fetch_failures_total 2"))
        #expect(pccs.tcbInfoRequests == 3)
        #expect(pccs.requests("/tdx/certification/v4/qe/identity") == 2, "the 404 ended the first fetch")
    }

    /// `c` with the TCB info's and QE identity's `nextUpdate` set to `nextUpdate`, re-signed by the TCB signing key.
    static func reissue(_ c: Collateral, nextUpdate: Int64, keys: TestPKIKeys) throws -> Collateral {
        let formatter = ISO8601DateFormatter()
        let date = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(nextUpdate)))
        func renew(_ json: String) -> String {
            json.replacingOccurrences(
                of: #""nextUpdate":"[^"]*""#, with: "\"nextUpdate\":\"\(date)\"", options: .regularExpression)
        }
        let tcbInfo = renew(c.tcbInfo)
        let qeIdentity = renew(c.qeIdentity)
        return Collateral(
            pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
            tcbInfoIssuerChain: c.tcbInfoIssuerChain, tcbInfo: tcbInfo,
            tcbInfoSignature: Array(try keys.tcbSigning.signature(for: Array(tcbInfo.utf8)).rawRepresentation),
            qeIdentityIssuerChain: c.qeIdentityIssuerChain, qeIdentity: qeIdentity,
            qeIdentitySignature: Array(try keys.tcbSigning.signature(for: Array(qeIdentity.utf8)).rawRepresentation))
    }
}
