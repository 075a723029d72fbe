import Attestation
import Crypto
import Foundation
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
        // Collateral valid for 45 seconds from now (refreshed in its last quarter, as PCCSCollateralCache does), long enough for a KMS started on a loaded machine, from keys the test keeps, so it can be re-issued.
        let keys = TestPKIKeys()
        let teeDirectory = platform.directory.appendingPathComponent("short")
        var options = TestPlatformOptions()
        options.collateralValidFor = 45
        let start = Int64(Date().timeIntervalSince1970)
        let tee = try SoftwareTEE.initialize(directory: teeDirectory, options: options, now: start, keys: keys)
        let pccs = try PCCSStandIn(collateral: tee.collateral)
        defer { pccs.stop() }
        var environment = platform.environment(port: 0)
        environment["COLLATERAL_DIR"] = nil
        environment["PCCS_URL"] = pccs.url
        environment["TRUST_ANCHOR"] = teeDirectory.appendingPathComponent("root.der").path
        let kms = try await KMS(environment)
        let identity = PeerIdentity.generate()

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
        let expiry = start + 46 - Int64(Date().timeIntervalSince1970)
        if expiry > 0 { try await Task.sleep(for: .seconds(expiry)) }
        let third = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(third, identity: identity, tee: tee).body
        let stale = try await kms.post("/get-key", request)
        #expect(stale.status == 503, "\(stale.text)")
        #expect(stale.error?.error == "PolicyNotReady")
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503, "\(ready.text)")
        #expect(ready.text.contains("expired"))

        // The PCCS back with fresh collateral: after the retry interval the same challenge is released.
        // The same documents with a later nextUpdate, re-signed by the TCB signing key.
        func renew(_ json: String) -> String {
            json.replacingOccurrences(
                of: #""nextUpdate":"[^"]*""#, with: #""nextUpdate":"2099-01-01T00:00:00Z""#, options: .regularExpression
            )
        }
        let c = tee.collateral
        let tcbInfo = renew(c.tcbInfo)
        let qeIdentity = renew(c.qeIdentity)
        let renewed = Collateral(
            pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
            tcbInfoIssuerChain: c.tcbInfoIssuerChain, tcbInfo: tcbInfo,
            tcbInfoSignature: Array(try keys.tcbSigning.signature(for: Array(tcbInfo.utf8)).rawRepresentation),
            qeIdentityIssuerChain: c.qeIdentityIssuerChain, qeIdentity: qeIdentity,
            qeIdentitySignature: Array(try keys.tcbSigning.signature(for: Array(qeIdentity.utf8)).rawRepresentation))
        #expect(tcbInfo != c.tcbInfo)
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
}
