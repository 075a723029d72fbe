import Attestation
import Crypto
import Foundation
import KMSClient
import KeyRelease
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

/// One KMS (memory store) shared by the error tests.
final class ErrorFixture: @unchecked Sendable {
    let platform: Platform
    let kms: KMS

    init() async throws {
        platform = try Platform()
        kms = try await KMS.start(platform, extra: ["MAX_PENDING_CHALLENGES": "3"])
    }

    /// Challenge, build a request with `spoil` applied, send it; returns the answer.
    func attempt(
        identity: PeerIdentity = .generate(),
        build: (ChallengeResponse, PeerIdentity) throws -> KeyRequest
    ) async throws -> HTTPConnection.Response {
        let challenge = try await kms.challenge(for: identity)
        return try await kms.post("/get-key", build(challenge, identity).body)
    }
}

@Suite("KMS error codes through HTTP", .serialized)
struct KMSErrorTests {
    let fixture: ErrorFixture
    var kms: KMS { fixture.kms }
    var tee: SoftwareTEE { fixture.platform.tee }

    init() async throws { fixture = try await ErrorFixture() }

    func expectError(
        _ response: HTTPConnection.Response,
        _ status: Int,
        _ code: String,
        message: String? = nil,
        field: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(response.status == status, "\(response.text)", sourceLocation: sourceLocation)
        #expect(response.error?.error == code, "\(response.text)", sourceLocation: sourceLocation)
        if let message {
            #expect(
                response.error?.message.contains(message) == true, "\(response.text)", sourceLocation: sourceLocation)
        }
        #expect(response.error?.field == field, sourceLocation: sourceLocation)
    }

    @Test("malformed JSON, a missing field, a wrong type: 400 InvalidRequest")
    func malformed() async throws {
        expectError(
            try await kms.send(.post, "/get-key", json: "{not json"), 400, "InvalidRequest", message: "not valid JSON")
        expectError(
            try await kms.send(.post, "/get-key", json: "{\"challengeId\":\"x\"}"), 400, "InvalidRequest",
            message: "missing field")
        expectError(
            try await kms.send(.post, "/challenge", json: "{\"peerId\":5}"), 400, "InvalidRequest",
            message: "wrong type")
        expectError(try await kms.send(.post, "/challenge", json: ""), 400, "InvalidRequest")
    }

    @Test("bad base64: 400 InvalidRequest, and the challenge is not spent")
    func badBase64() async throws {
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        var request = try KeyRequest.valid(challenge, identity: identity, tee: tee).body
        let good = request
        request["quote"] = "%%%not base64%%%"
        expectError(try await kms.post("/get-key", request), 400, "InvalidRequest", message: "quote is not base64")
        request = good
        request["signature"] = "@@"
        expectError(try await kms.post("/get-key", request), 400, "InvalidRequest", message: "signature is not base64")
        #expect(try await kms.post("/get-key", good).status == 200)
    }

    @Test(
        "a bad peer id: 400 InvalidPeerId",
        arguments: ["", "QmdTpuKko93ozceWzy9QdzzY3DPdoEakowcP2cYapmNx8y", "12D3KooW0OIl"])
    func badPeer(peer: String) async throws {
        expectError(try await kms.post("/challenge", ["peerId": peer]), 400, "InvalidPeerId")
    }

    @Test("unknown and used challenges: 400 InvalidChallenge")
    func challenges() async throws {
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(challenge, identity: identity, tee: tee).body
        #expect(try await kms.post("/get-key", request).status == 200)
        expectError(try await kms.post("/get-key", request), 400, "InvalidChallenge")
        var unknown = request
        unknown["challengeId"] = UUID().uuidString
        expectError(try await kms.post("/get-key", unknown), 400, "InvalidChallenge")
        // Logs never carry the nonce, the signature or the quote. (Audit
        // lines are written in the background, in order: once the refusal's
        // line is there, so is everything before it.)
        try await eventually { kms.process.log.contains("InvalidChallenge") }
        let log = kms.process.log
        #expect(!log.contains(challenge.nonce))
        #expect(!log.contains(request["signature"]!))
        #expect(!log.contains(String(request["quote"]!.prefix(40))))
    }

    @Test("a wrong signature, or a signature by another peer: 401 InvalidSignature")
    func signatures() async throws {
        expectError(
            try await fixture.attempt { challenge, identity in
                var request = try KeyRequest.valid(challenge, identity: identity, tee: tee)
                request.signature[3] ^= 1
                return request
            },
            401,
            "InvalidSignature"
        )
        expectError(
            try await fixture.attempt { challenge, identity in
                var request = try KeyRequest.valid(challenge, identity: identity, tee: tee)
                request.signature = try PeerIdentity.generate().sign([UInt8](hex: challenge.nonce)!)
                return request
            },
            401,
            "InvalidSignature"
        )
    }

    @Test("a quote for another nonce or another peer: 401 InvalidQuote (report_data mismatch)")
    func binding() async throws {
        expectError(
            try await fixture.attempt { challenge, identity in
                try KeyRequest.valid(
                    challenge, identity: identity, tee: tee, reportDataNonce: Array(repeating: 9, count: 32))
            },
            401,
            "InvalidQuote",
            message: "report_data mismatch"
        )
        expectError(
            try await fixture.attempt { challenge, identity in
                try KeyRequest.valid(
                    challenge, identity: identity, tee: tee, reportDataPeer: PeerIdentity.generate().peerId.string)
            },
            401,
            "InvalidQuote",
            message: "report_data mismatch"
        )
    }

    @Test("a tampered, truncated or non-TDX quote: 401 InvalidQuote")
    func tampered() async throws {
        for spoil in [
            { (quote: inout [UInt8]) in quote[quote.count - 200] ^= 1 },  // inside the certification data
            { (quote: inout [UInt8]) in quote[700] ^= 1 },  // inside the quote signature
            { (quote: inout [UInt8]) in quote = Array(quote.prefix(400)) },
            { (quote: inout [UInt8]) in quote[4] = 0 },  // TEE type: not TDX
        ] {
            expectError(
                try await fixture.attempt { challenge, identity in
                    var request = try KeyRequest.valid(challenge, identity: identity, tee: tee)
                    spoil(&request.quote)
                    return request
                },
                401,
                "InvalidQuote"
            )
        }
    }

    @Test("each measurement outside the policy: 403 PolicyViolation naming the field", arguments: 0..<5)
    func policyFields(index: Int) async throws {
        let other = [UInt8](repeating: 0xEE, count: 48)
        let field = index == 0 ? "MRTD" : "RTMR\(index - 1)"
        let response = try await fixture.attempt { challenge, identity in
            var rtmrs: [[UInt8]?] = [nil, nil, nil, nil]
            if index > 0 { rtmrs[index - 1] = other }
            return try KeyRequest.valid(
                challenge, identity: identity, tee: tee, mrTD: index == 0 ? other : nil, rtmrs: rtmrs)
        }
        expectError(response, 403, "PolicyViolation", field: field)
        // The allowlist itself is never echoed.
        #expect(!response.text.contains(fixture.platform.measurements.mrtd.hexString))
    }

    @Test("the per-peer limit: 429 RateLimited with Retry-After")
    func rateLimit() async throws {
        let identity = PeerIdentity.generate()
        for _ in 0..<3 { _ = try await kms.challenge(for: identity) }
        let response = try await kms.post("/challenge", ["peerId": identity.peerId.string])
        expectError(response, 429, "RateLimited")
        let retryAfter = response.headers.first(name: "Retry-After").flatMap(Int.init)
        #expect(retryAfter.map { $0 >= 1 && $0 <= 300 } == true)
        // Another peer is unaffected.
        _ = try await kms.challenge(for: .generate())
    }

    @Test("a body over 64 KiB: 413 PayloadTooLarge; an unknown route: 404 with the JSON error body")
    func limits() async throws {
        let big = "{\"peerId\":\"" + String(repeating: "a", count: 70_000) + "\"}"
        expectError(try await kms.send(.post, "/challenge", json: big), 413, "PayloadTooLarge")
        expectError(try await kms.send(.get, "/nope", json: ""), 404, "NotFound")
        let wrongMethod = try await kms.send(.get, "/challenge", json: "")
        expectError(wrongMethod, 405, "MethodNotAllowed")
        #expect(wrongMethod.headers.first(name: "Allow") == "POST")
    }

    @Test("healthz, readyz and metrics answer")
    func probes() async throws {
        #expect(try await kms.send(.get, "/healthz", json: "").status == 200)
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 200, "\(ready.text)")
        let metrics = try await kms.send(.get, "/metrics", json: "")
        #expect(metrics.status == 200)
        #expect(metrics.text.contains("keyrack_kms_key_requests_total"))
        #expect(metrics.text.contains("keyrack_kms_pending_challenges"))
    }
}
