import Attestation
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import KMSClient
import KeyrackCore
import KeyrackTestSupport
import RedisClient
import Testing

@testable import KeyRelease
@testable import KeyReleaseServer

/// The KMS assembled in this process — the production pipeline, verifier,
/// stores, key providers and routes — with a software TEE's PKI as the
/// trust anchor, driven through Hummingbird's in-process test client. No
/// socket is opened; the process tests (`KMSEndToEndTests`) remain the
/// smoke tests of the real binary.
struct InProcessKMS {
    let directory: URL
    let tee: SoftwareTEE
    let policyPath: String
    let root: SecretBytes
    let service: KeyReleaseService<TDXEvidenceVerifier>

    /// A KMS whose policy admits the software TEE's measurements, unless
    /// `writePolicy` is false (then `POLICY_FILE` names a missing file).
    init(
        writePolicy: Bool = true,
        store: any ChallengeStore = MemoryChallengeStore(),
        keys: (any KeyProvider)? = nil,
        maximumPending: Int = 8,
        maximumPendingTotal: Int = 100_000,
        collateralDirectory: URL? = nil,
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("keyrack-kms-routes-\(UUID().uuidString)")
        tee = try SoftwareTEE.initialize(directory: directory, now: Int64(Date().timeIntervalSince1970))
        policyPath = directory.appendingPathComponent("policy.json").path
        root = SecretBytes((0..<32).map { UInt8($0) })
        if writePolicy {
            try Self.matchingPolicy(tee).write(to: URL(fileURLWithPath: policyPath))
        }
        service = KeyReleaseService(
            settings: .init(maximumPending: maximumPending, maximumPendingTotal: maximumPendingTotal),
            store: store,
            keys: try keys ?? LocalKeyProvider(root: root),
            policies: PolicyHolder(path: policyPath),
            verifier: TDXEvidenceVerifier(
                trustAnchor: tee.trustAnchor, collateralDirectory: collateralDirectory ?? directory),
            now: now
        )
    }

    /// A policy that admits the software TEE's default measurements (or `mrtd` instead of its MRTD).
    static func matchingPolicy(_ tee: SoftwareTEE, mrtd: [UInt8]? = nil) -> Data {
        let measurements = tee.defaultMeasurements
        return policyJSON(
            mrtd: [(mrtd ?? measurements.mrTD).hexString], rtmr: measurements.rtmrs.map { [$0.hexString] })
    }

    /// Writes the policy file: the software TEE's measurements (or `mrtd` instead of its MRTD).
    func writeMatchingPolicy(mrtd: [UInt8]? = nil) throws {
        try Self.matchingPolicy(tee, mrtd: mrtd).write(to: URL(fileURLWithPath: policyPath))
    }

    func removeFiles() { try? FileManager.default.removeItem(at: directory) }

    /// Runs `body` against the routes in process; removes the files after.
    func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        defer { removeFiles() }
        let app = Application(router: KMSRoutes.router(service: service))
        try await app.test(.router, body)
    }

    /// The key the local provider derives for `peer` under the default namespace.
    func expectedKey(for peer: PeerIdentity) throws -> String {
        let provider = try LocalKeyProvider(root: root)
        return provider.deriveKey(namespace: "keyrack/storage", peerId: peer.peerId.string)
            .withUnsafeBytes { Data($0).base64EncodedString() }
    }
}

/// What a node sends: its peer identity, a quote bound to the nonce, a signature.
struct KMSCaller: Sendable {
    let identity = PeerIdentity.generate()

    func challengeBody() -> String { "{\"peerId\":\"\(identity.peerId.string)\"}" }

    /// A `/challenge` body with a proof of possession made at `time` (by
    /// `signWith` instead of this caller, to forge one).
    func provenChallengeBody(time: Int64 = Int64(Date().timeIntervalSince1970), signWith: PeerIdentity? = nil)
        throws -> String
    {
        let proof = try (signWith ?? identity).sign(ChallengeProof.message(peerId: identity.peerId.string, time: time))
        return """
            {"peerId":"\(identity.peerId.string)","time":\(time),"proof":"\(Data(proof).base64EncodedString())"}
            """
    }

    /// A `/get-key` body for `challenge`; `bindTo` replaces the nonce in the
    /// quote's report data, `signWith` the key that signs it.
    /// `wrapKey` is sent as given; `bindWrapKey` is the one the quote binds
    /// (by default the same; `.some(nil)` binds none).
    func getKeyBody(
        _ challenge: ChallengeResponse, tee: SoftwareTEE, bindTo: [UInt8]? = nil, signWith: PeerIdentity? = nil,
        quote override: [UInt8]? = nil, wrapKey: [UInt8]? = nil, bindWrapKey: [UInt8]?? = .none
    ) throws -> String {
        let nonce = try #require([UInt8](hex: challenge.nonce))
        let bound: [UInt8]?
        switch bindWrapKey {
        case .none: bound = wrapKey
        case .some(let key): bound = key
        }
        let reportData = KeyWrapping.reportData(nonce: bindTo ?? nonce, peerId: identity.peerId.string, wrapKey: bound)
        let quote = try override ?? tee.quote(reportData: reportData)
        let signature = try (signWith ?? identity).sign(nonce)
        let wrap = wrapKey.map { ",\"wrapKey\":\"\(Data($0).base64EncodedString())\"" } ?? ""
        return """
            {"challengeId":"\(challenge.challengeId)","quote":"\(Data(quote).base64EncodedString())",\
            "signature":"\(Data(signature).base64EncodedString())"\(wrap)}
            """
    }
}

extension TestClientProtocol {
    /// POSTs a JSON body and returns the status, headers and body.
    func post(_ path: String, _ body: String) async throws -> TestResponse {
        try await execute(uri: path, method: .post, body: ByteBuffer(string: body))
    }

    /// A challenge for `caller`, which must be issued.
    func challenge(for caller: KMSCaller) async throws -> ChallengeResponse {
        let response = try await post("/challenge", caller.challengeBody())
        #expect(response.status == .ok)
        return try JSONDecoder().decode(ChallengeResponse.self, from: Data(buffer: response.body))
    }
}

extension TestResponse {
    /// The API's error body.
    func errorBody() throws -> ErrorBody { try JSONDecoder().decode(ErrorBody.self, from: Data(buffer: body)) }
}

@Suite("KMS routes in process (HummingbirdTesting)")
struct KMSRoutesTests {
    @Test("a challenge, a bound quote and a signature release the peer's derived key; the challenge is spent")
    func releases() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        let expected = try kms.expectedKey(for: caller.identity)
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            #expect(challenge.nonce.count == 64)
            #expect(UUID(uuidString: challenge.challengeId) != nil)
            #expect(challenge.challengeId == challenge.challengeId.lowercased())
            let body = try caller.getKeyBody(challenge, tee: kms.tee)
            let released = try await client.post("/get-key", body)
            #expect(released.status == .ok)
            #expect(released.headers[.contentType] == "application/json")
            let key = try JSONDecoder().decode(GetKeyResponse.self, from: Data(buffer: released.body)).key
            #expect(key == expected)

            let again = try await client.post("/get-key", body)
            #expect(again.status == .badRequest)
            #expect(try again.errorBody().error == "InvalidChallenge")
        }
        #expect(kms.service.metrics.keyReleases("Released") == 1)
        #expect(kms.service.metrics.keyReleases("InvalidChallenge") == 1)
    }

    @Test("two peers get different keys from one root")
    func perPeer() async throws {
        let kms = try InProcessKMS()
        let first = KMSCaller()
        let second = KMSCaller()
        try await kms.test { client in
            var keys: [String] = []
            for caller in [first, second] {
                let challenge = try await client.challenge(for: caller)
                let released = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
                keys.append(
                    try #require(try JSONDecoder().decode(GetKeyResponse.self, from: Data(buffer: released.body)).key))
            }
            #expect(keys == [try kms.expectedKey(for: first.identity), try kms.expectedKey(for: second.identity)])
            #expect(keys[0] != keys[1])
        }
    }

    @Test(
        "malformed requests are 400 InvalidRequest with the reason",
        arguments: [
            ("/challenge", "{", "the body is not valid JSON"),
            ("/challenge", "{}", "missing field 'peerId'"),
            ("/challenge", "{\"peerId\":7}", "field 'peerId' has the wrong type"),
            (
                "/get-key", "{\"challengeId\":\"x\",\"quote\":\"AA==\",\"signature\":\"AA==\"}",
                "challengeId is not a UUID"
            ),
            (
                "/get-key", "{\"challengeId\":\"\(UUID().uuidString)\",\"quote\":\"!!\",\"signature\":\"AA==\"}",
                "quote is not base64"
            ),
            (
                "/get-key", "{\"challengeId\":\"\(UUID().uuidString)\",\"quote\":\"AA==\",\"signature\":\"%\"}",
                "signature is not base64"
            ),
        ])
    func malformed(path: String, body: String, message: String) async throws {
        let kms = try InProcessKMS()
        try await kms.test { client in
            let response = try await client.post(path, body)
            #expect(response.status == .badRequest)
            #expect(try response.errorBody() == ErrorBody(error: "InvalidRequest", message: message, field: nil))
        }
    }

    @Test("a body over 64 KiB is 413 PayloadTooLarge")
    func tooLarge() async throws {
        let kms = try InProcessKMS()
        try await kms.test { client in
            let padding = String(repeating: "a", count: KMSRoutes.maximumBodyBytes)
            let response = try await client.post("/challenge", "{\"peerId\":\"\(padding)\"}")
            #expect(response.status == .contentTooLarge)
            #expect(try response.errorBody().error == "PayloadTooLarge")
        }
    }

    @Test("a peer id that is not an Ed25519 libp2p id is 400 InvalidPeerId")
    func invalidPeer() async throws {
        let kms = try InProcessKMS()
        try await kms.test { client in
            let response = try await client.post("/challenge", "{\"peerId\":\"QmNotAPeer0OIl\"}")
            #expect(response.status == .badRequest)
            #expect(try response.errorBody().error == "InvalidPeerId")
        }
        #expect(kms.service.metrics.keyReleases("Released") == 0)
    }

    @Test("a peer over its pending-challenge limit is 429 RateLimited with Retry-After")
    func rateLimited() async throws {
        let kms = try InProcessKMS(maximumPending: 2)
        let caller = KMSCaller()
        try await kms.test { client in
            _ = try await client.challenge(for: caller)
            _ = try await client.challenge(for: caller)
            let refused = try await client.post("/challenge", caller.challengeBody())
            #expect(refused.status == .tooManyRequests)
            #expect(try refused.errorBody().error == "RateLimited")
            let retryAfter = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
            #expect((1...300).contains(retryAfter))
            // Another peer is not affected.
            _ = try await client.challenge(for: KMSCaller())
        }
    }

    @Test("an unknown challenge is 400 InvalidChallenge")
    func unknownChallenge() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let made = ChallengeResponse(
                challengeId: UUID().uuidString.lowercased(), nonce: String(repeating: "00", count: 32), expiresAt: "")
            let response = try await client.post("/get-key", try caller.getKeyBody(made, tee: kms.tee))
            #expect(response.status == .badRequest)
            #expect(try response.errorBody().error == "InvalidChallenge")
        }
    }

    @Test("a nonce signed by another key is 401 InvalidSignature, and the challenge is spent")
    func wrongSigner() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let forged = try caller.getKeyBody(challenge, tee: kms.tee, signWith: .generate())
            let response = try await client.post("/get-key", forged)
            #expect(response.status == .unauthorized)
            #expect(try response.errorBody().error == "InvalidSignature")
            let honest = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
            #expect(try honest.errorBody().error == "InvalidChallenge")
        }
    }

    @Test("a quote bound to another nonce is 401 InvalidQuote (report_data mismatch)")
    func unbound() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let body = try caller.getKeyBody(challenge, tee: kms.tee, bindTo: [UInt8](repeating: 7, count: 32))
            let response = try await client.post("/get-key", body)
            #expect(response.status == .unauthorized)
            #expect(
                try response.errorBody()
                    == ErrorBody(error: "InvalidQuote", message: "report_data mismatch", field: nil))
        }
    }

    @Test("bytes that are not a quote, and a truncated quote, are 401 InvalidQuote")
    func notAQuote() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let nonce = [UInt8](repeating: 0, count: 32)
            let whole = try kms.tee.quote(reportData: nonce + nonce)
            for quote in [[UInt8](repeating: 0x5a, count: 100), Array(whole.prefix(whole.count / 2))] {
                let challenge = try await client.challenge(for: caller)
                let response = try await client.post(
                    "/get-key", try caller.getKeyBody(challenge, tee: kms.tee, quote: quote))
                #expect(response.status == .unauthorized)
                #expect(try response.errorBody().error == "InvalidQuote")
            }
        }
        #expect(kms.service.metrics.keyReleases("InvalidQuote") == 2)
    }

    @Test("a quote from a platform outside the trust anchor is 401 InvalidQuote")
    func foreignPlatform() async throws {
        let kms = try InProcessKMS()
        let other = try InProcessKMS()
        defer { other.removeFiles() }
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let response = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: other.tee))
            #expect(response.status == .unauthorized)
            #expect(try response.errorBody().error == "InvalidQuote")
        }
    }

    @Test("measurements outside the policy are 403 PolicyViolation naming the field")
    func violation() async throws {
        let kms = try InProcessKMS()
        try kms.writeMatchingPolicy(mrtd: [UInt8](repeating: 0xee, count: 48))
        #expect(throws: Never.self) { try kms.service.policies.reload().get() }
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let response = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
            #expect(response.status == .forbidden)
            let body = try response.errorBody()
            #expect(body.error == "PolicyViolation")
            #expect(body.field == "MRTD")
        }
    }

    @Test("without a policy: 503 PolicyNotReady, /readyz says why, and the challenge stays unspent")
    func policyNotReady() async throws {
        let kms = try InProcessKMS(writePolicy: false)
        let caller = KMSCaller()
        try await kms.test { client in
            let notReady = try await client.execute(uri: "/readyz", method: .get)
            #expect(notReady.status == .serviceUnavailable)
            let reason = try JSONDecoder().decode(ReadinessBody.self, from: Data(buffer: notReady.body))
            #expect(reason == ReadinessBody(status: "not ready", notReady: ["policy"], reason: "not ready: policy"))
            // The policy file's path is only in the log (review L7).
            let parts = await kms.service.notReady()
            #expect(parts.map(\.component) == [.policy])
            #expect(parts.first?.detail.contains(kms.directory.path) == true)
            #expect(!String(buffer: notReady.body).contains(kms.directory.path))

            let challenge = try await client.challenge(for: caller)
            let body = try caller.getKeyBody(challenge, tee: kms.tee)
            let refused = try await client.post("/get-key", body)
            #expect(refused.status == .serviceUnavailable)
            #expect(try refused.errorBody().error == "PolicyNotReady")
            #expect(try refused.errorBody().message == "no attestation policy is loaded")
            #expect(!String(buffer: refused.body).contains(kms.directory.path))

            try kms.writeMatchingPolicy()
            #expect(kms.service.policies.reloadIfChanged() != nil)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            let released = try await client.post("/get-key", body)
            #expect(released.status == .ok)
            #expect(
                try JSONDecoder().decode(GetKeyResponse.self, from: Data(buffer: released.body)).key
                    == kms.expectedKey(for: caller.identity))
        }
    }

    @Test("collateral past its nextUpdate: 503 PolicyNotReady before the challenge is spent, and /readyz says why")
    func expiredCollateral() async throws {
        // The software TEE's TCB info and QE identity are valid for 30 days; the KMS's clock is 40 days on.
        let kms = try InProcessKMS(now: { Date().addingTimeInterval(40 * 86_400) })
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let refused = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
            #expect(refused.status == .serviceUnavailable)
            let body = try refused.errorBody()
            #expect(body.error == "PolicyNotReady")
            #expect(body.message == "collateral for this platform is not ready")
            #expect(try await kms.service.store.pendingCount() == 1, "the challenge was spent")
            let readiness = try await client.execute(uri: "/readyz", method: .get)
            #expect(readiness.status == .serviceUnavailable)
            let reason = try JSONDecoder().decode(ReadinessBody.self, from: Data(buffer: readiness.body))
            #expect(reason.notReady == ["collateral"])
            let parts = await kms.service.notReady()
            #expect(parts.map(\.component) == [.collateral])
            #expect(parts.first?.detail.hasPrefix("every collateral document in COLLATERAL_DIR has expired") == true)
        }
        #expect(kms.service.metrics.keyReleases("PolicyNotReady") == 1)
    }

    @Test(
        "COLLATERAL_DIR is read again when it changes: empty, then a document, then a corrupt rewrite (last good kept)")
    func collateralDirectoryChanges() async throws {
        let collateral = FileManager.default.temporaryDirectory
            .appendingPathComponent("keyrack-collateral-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: collateral, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: collateral) }
        let kms = try InProcessKMS(collateralDirectory: collateral)
        let verifier = kms.service.verifier
        let caller = KMSCaller()
        try await kms.test { client in
            #expect(verifier.notReadyReason(now: Date()) == "no collateral document in \(collateral.path)")
            #expect(verifier.reloadCollateralIfChanged() == nil, "nothing changed")
            let challenge = try await client.challenge(for: caller)
            let body = try caller.getKeyBody(challenge, tee: kms.tee)
            #expect(try await client.post("/get-key", body).status == .serviceUnavailable)

            let document = collateral.appendingPathComponent("platform.json")
            try FileManager.default.copyItem(at: kms.directory.appendingPathComponent("collateral.json"), to: document)
            let reloaded = try #require(verifier.reloadCollateralIfChanged())
            #expect(throws: Never.self) { try reloaded.get() }
            #expect(verifier.notReadyReason(now: Date()) == nil)
            let released = try await client.post("/get-key", body)
            #expect(released.status == .ok, "the challenge refused while not ready is still good")

            try Data("{\"not\": \"collateral\"}".utf8).write(to: document)
            let failed = try #require(verifier.reloadCollateralIfChanged())
            #expect((#expect(throws: EvidenceFailure.self) { try failed.get() })?.code == .collateral)
            #expect(verifier.notReadyReason(now: Date()) == nil, "the last good collateral is kept")
            let again = try await client.challenge(for: caller)
            #expect(try await client.post("/get-key", try caller.getKeyBody(again, tee: kms.tee)).status == .ok)
        }
    }

    @Test("a key provider that fails is 502 KeyDerivationFailed (dstack's socket is missing)")
    func keyDerivationFailed() async throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("no-dstack-\(UUID()).sock").path
        let kms = try InProcessKMS(keys: DstackKeyProvider(socketPath: missing))
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let response = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
            #expect(response.status == .badGateway)
            let body = try response.errorBody()
            #expect(body.error == "KeyDerivationFailed")
            #expect(body.message == "the key provider failed")
            #expect(!String(buffer: response.body).contains(missing), "the socket's path is for the log only")
        }
    }

    @Test("a Redis store that cannot be reached is 503 StoreUnavailable for challenges and in /readyz")
    func storeUnavailable() async throws {
        // A free loopback port with nothing listening: the real client's connection is refused.
        let port = try freeLoopbackPort()
        let client = RedisClient(
            configuration: RedisConfiguration(host: "127.0.0.1", port: port))
        defer { client.shutdown() }
        let kms = try InProcessKMS(store: RedisChallengeStore(client: client))
        try await kms.test { http in
            let response = try await http.post("/challenge", KMSCaller().challengeBody())
            #expect(response.status == .serviceUnavailable)
            #expect(try response.errorBody().error == "StoreUnavailable")
            let readiness = try await http.execute(uri: "/readyz", method: .get)
            #expect(readiness.status == .serviceUnavailable)
            let reason = try JSONDecoder().decode(ReadinessBody.self, from: Data(buffer: readiness.body))
            #expect(reason.notReady == ["store"])
            // Redis's address only in the log.
            for body in [response.body, readiness.body] {
                #expect(!String(buffer: body).contains("\(port)"), "\(String(buffer: body))")
            }
        }
    }

    @Test("a known path with another method is 405 with Allow; an unknown path is 404 NotFound")
    func routing() async throws {
        let kms = try InProcessKMS()
        try await kms.test { client in
            let wrongMethod = try await client.execute(uri: "/get-key", method: .get)
            #expect(wrongMethod.status == .methodNotAllowed)
            #expect(wrongMethod.headers[.allow] == "POST")
            #expect(try wrongMethod.errorBody().error == "MethodNotAllowed")
            let unknown = try await client.execute(uri: "/keys", method: .get)
            #expect(unknown.status == .notFound)
            #expect(try unknown.errorBody().error == "NotFound")
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
        }
    }

    @Test("/metrics counts each outcome and the pending challenges")
    func metrics() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            _ = try await client.challenge(for: caller)
            _ = try await client.post("/get-key", try caller.getKeyBody(challenge, tee: kms.tee))
            _ = try await client.post("/challenge", "{\"peerId\":\"bad\"}")
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            let lines = Set(String(buffer: response.body).split(separator: "\n").map(String.init))
            #expect(lines.contains("keyrack_kms_challenges_total{outcome=\"Issued\"} 2"))
            #expect(lines.contains("keyrack_kms_challenges_total{outcome=\"InvalidPeerId\"} 1"))
            #expect(lines.contains("keyrack_kms_key_requests_total{outcome=\"Released\"} 1"))
            #expect(lines.contains("keyrack_kms_get_key_seconds_count 1"))
            let text = String(buffer: response.body)
            #expect(metricValue(text, "keyrack_kms_pending_challenges") == 1)
            #expect(metricValue(text, "keyrack_kms_store_ready") == 1)
            // Every outcome's series exists from the start, at zero.
            #expect(metricValue(text, "keyrack_kms_key_requests_total{outcome=\"PolicyViolation\"}") == 0)
            // One family each, with its TYPE line, as Prometheus requires.
            #expect(lines.filter { $0 == "# TYPE keyrack_kms_key_requests_total counter" }.count == 1)
            #expect(lines.contains("# TYPE keyrack_kms_get_key_seconds histogram"))
            #expect(lines.contains("keyrack_kms_get_key_seconds_bucket{le=\"+Inf\"} 1"))
        }
    }
}
