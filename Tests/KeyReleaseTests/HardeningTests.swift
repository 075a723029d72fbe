import Attestation
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import KMSClient
import KeyrackCore
import KeyrackTestSupport
import Synchronization
import Testing

@testable import KeyRelease
@testable import KeyReleaseServer

/// The key-release service on a hostile network (spec key-release.md,
/// "Hardened for the open network"): proof of possession on `/challenge`,
/// the total bound, keys wrapped to the TD.
@Suite("KMS hardening: no lockout, bounded challenges, keys wrapped to the TD")
struct HardeningTests {
    @Test("anyone can spend a peer's anonymous budget, but not its proven one: proven requests still get challenges")
    func noLockout() async throws {
        let kms = try InProcessKMS(maximumPending: 3)
        let victim = KMSCaller()
        try await kms.test { client in
            // An attacker, knowing only the public peer id, fills the anonymous budget.
            for _ in 0..<3 { _ = try await client.challenge(for: victim) }
            let locked = try await client.post("/challenge", victim.challengeBody())
            #expect(locked.status == .tooManyRequests)
            #expect(try locked.errorBody().error == "RateLimited")
            let retryAfter = try #require(locked.headers[.retryAfter].flatMap { Int($0) })
            #expect((290...300).contains(retryAfter))
            // The peer itself proves its key and is served, up to its own budget.
            var proven: [ChallengeResponse] = []
            for _ in 0..<3 {
                let response = try await client.post("/challenge", try victim.provenChallengeBody())
                #expect(response.status == .ok)
                proven.append(try JSONDecoder().decode(ChallengeResponse.self, from: Data(buffer: response.body)))
            }
            let over = try await client.post("/challenge", try victim.provenChallengeBody())
            #expect(over.status == .tooManyRequests)
            #expect(try over.errorBody().message.contains("proven"))
            // A proven challenge releases the key like any other.
            let released = try await client.post("/get-key", try victim.getKeyBody(proven[0], tee: kms.tee))
            #expect(released.status == .ok)
            #expect(
                try JSONDecoder().decode(GetKeyResponse.self, from: Data(buffer: released.body)).key
                    == kms.expectedKey(for: victim.identity))
        }
    }

    @Test("a proof that is forged, stale, from the future, malformed or half given is refused, never downgraded")
    func badProofs() async throws {
        // The server's clock is fixed: however long a loaded run leaves a task
        // waiting between making a body and the handler reading the clock, each
        // time is exactly as far from the server's as the test says.
        let fixed = Int64(Date().timeIntervalSince1970)
        let kms = try InProcessKMS(now: { Date(timeIntervalSince1970: TimeInterval(fixed)) })
        let caller = KMSCaller()
        @Sendable func now() -> Int64 { fixed }
        let peer = caller.identity.peerId.string
        try await kms.test { client in
            func expect(_ body: String, _ status: HTTPResponse.Status, _ code: String, _ message: String) async throws {
                let response = try await client.post("/challenge", body)
                #expect(response.status == status, "\(body)")
                let error = try response.errorBody()
                #expect(error.error == code)
                #expect(error.message == message)
            }
            try await expect(
                try caller.provenChallengeBody(time: now(), signWith: .generate()), .unauthorized, "InvalidSignature",
                "the proof does not verify with the peer's key")
            try await expect(
                try caller.provenChallengeBody(time: now() - 75), .unauthorized, "InvalidSignature",
                "the proof's time is more than 60 s from the server's clock")
            try await expect(
                try caller.provenChallengeBody(time: now() + 75), .unauthorized, "InvalidSignature",
                "the proof's time is more than 60 s from the server's clock")
            try await expect(
                #"{"peerId":"\#(peer)","time":\#(now())}"#, .badRequest, "InvalidRequest",
                "time and proof must be given together")
            try await expect(
                #"{"peerId":"\#(peer)","proof":"AAAA"}"#, .badRequest, "InvalidRequest",
                "time and proof must be given together")
            try await expect(
                #"{"peerId":"\#(peer)","time":\#(now()),"proof":"AAAA"}"#, .badRequest, "InvalidRequest",
                "proof is not a base64 Ed25519 signature (64 bytes)")
            try await expect(
                #"{"peerId":"\#(peer)","time":"\#(now())","proof":"AAAA"}"#, .badRequest, "InvalidRequest",
                "field 'time' has the wrong type")
            // Inside the window, either side, it is accepted.
            for offset: Int64 in [-50, 50] {
                #expect(
                    try await client.post("/challenge", try caller.provenChallengeBody(time: now() + offset)).status
                        == .ok)
            }
        }
        #expect(kms.service.metrics.keyReleases("Released") == 0)
    }

    @Test("a proof verified once is accepted again from the cache; the same proof with one bit changed is not")
    func proofCache() async throws {
        let time = Int64(Date().timeIntervalSince1970)
        // A fixed server clock: the proof stays inside its window however slow the run.
        let kms = try InProcessKMS(now: { Date(timeIntervalSince1970: TimeInterval(time)) })
        let caller = KMSCaller()
        let peer = caller.identity.peerId.string
        let proof = try caller.identity.sign(ChallengeProof.message(peerId: peer, time: time))
        try await kms.test { client in
            let body = #"{"peerId":"\#(peer)","time":\#(time),"proof":"\#(Data(proof).base64EncodedString())"}"#
            #expect(try await client.post("/challenge", body).status == .ok)
            #expect(try await client.post("/challenge", body).status == .ok)
            for index in [0, 31, 63] {
                var flipped = proof
                flipped[index] ^= 0x01
                let forged = #"{"peerId":"\#(peer)","time":\#(time),"proof":"\#(Data(flipped).base64EncodedString())"}"#
                let refused = try await client.post("/challenge", forged)
                #expect(refused.status == .unauthorized, "bit flipped in byte \(index)")
            }
            // Another time with the cached signature: refused.
            let moved = #"{"peerId":"\#(peer)","time":\#(time - 1),"proof":"\#(Data(proof).base64EncodedString())"}"#
            #expect(try await client.post("/challenge", moved).status == .unauthorized)
        }
    }

    @Test("MAX_PENDING_CHALLENGES_TOTAL: past it, 429 RateLimited with Retry-After for every peer")
    func totalBound() async throws {
        let kms = try InProcessKMS(maximumPendingTotal: 4)
        try await kms.test { client in
            var callers: [KMSCaller] = []
            for _ in 0..<4 {
                let caller = KMSCaller()
                callers.append(caller)
                _ = try await client.challenge(for: caller)
            }
            for body in [KMSCaller().challengeBody(), try KMSCaller().provenChallengeBody()] {
                let full = try await client.post("/challenge", body)
                #expect(full.status == .tooManyRequests)
                #expect(try full.errorBody().message.hasPrefix("the service holds its maximum of pending challenges"))
                #expect(full.headers[.retryAfter].flatMap { Int($0) }.map { (1...300).contains($0) } == true)
            }
        }
    }

    @Test("wrapKey: the answer is wrappedKey only, and it opens with the TD's private key to the peer's key")
    func wrapped() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let wrapPrivate = Curve25519.KeyAgreement.PrivateKey()
            let wrapKey = Array(wrapPrivate.publicKey.rawRepresentation)
            let released = try await client.post(
                "/get-key", try caller.getKeyBody(challenge, tee: kms.tee, wrapKey: wrapKey))
            #expect(released.status == .ok)
            let members = try #require(
                try JSONSerialization.jsonObject(with: Data(buffer: released.body)) as? [String: String])
            #expect(Set(members.keys) == ["wrappedKey"])
            let wrapped = try #require(members["wrappedKey"].flatMap { Data(base64Encoded: $0) })
            #expect(wrapped.count == 32 + 32 + 16)
            let opened = try KeyWrapping.open(Array(wrapped), with: wrapPrivate, challengeId: challenge.challengeId)
            #expect(
                opened.withUnsafeBytes { Data($0).base64EncodedString() } == (try kms.expectedKey(for: caller.identity))
            )
            // Another challenge id in the info string does not open it; nor does another key.
            #expect(throws: (any Error).self) {
                try KeyWrapping.open(Array(wrapped), with: wrapPrivate, challengeId: UUID().uuidString.lowercased())
            }
            #expect(throws: (any Error).self) {
                try KeyWrapping.open(Array(wrapped), with: .init(), challengeId: challenge.challengeId)
            }
        }
    }

    @Test("a quote that does not bind the wrapKey is 401; a wrapKey that is not an X25519 key is 400, nothing spent")
    func wrapRefusals() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        let wrapKey = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
        try await kms.test { client in
            let first = try await client.challenge(for: caller)
            // Bound plain SHA-256(peerId), as a client that does not wrap would: a gateway
            // could otherwise swap in its own wrap key.
            let unbound = try await client.post(
                "/get-key", try caller.getKeyBody(first, tee: kms.tee, wrapKey: wrapKey, bindWrapKey: .some(nil)))
            #expect(unbound.status == .unauthorized)
            #expect(try unbound.errorBody().error == "InvalidQuote")
            #expect(try unbound.errorBody().message == "report_data mismatch: the quote does not bind the wrapKey")
            // Bound to another wrap key than the one sent.
            let second = try await client.challenge(for: caller)
            let other = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
            let swapped = try await client.post(
                "/get-key", try caller.getKeyBody(second, tee: kms.tee, wrapKey: other, bindWrapKey: .some(wrapKey)))
            #expect(try swapped.errorBody().message == "report_data mismatch")

            let third = try await client.challenge(for: caller)
            for bad in [Array(wrapKey.prefix(31)), wrapKey + [0], [UInt8](repeating: 0, count: 32)] {
                let refused = try await client.post(
                    "/get-key", try caller.getKeyBody(third, tee: kms.tee, wrapKey: bad, bindWrapKey: .some(bad)))
                #expect(refused.status == .badRequest, "\(bad.count) bytes")
                #expect(try refused.errorBody().message == "wrapKey is not a base64 X25519 public key (32 bytes)")
            }
            // None of those spent the challenge.
            let released = try await client.post(
                "/get-key", try caller.getKeyBody(third, tee: kms.tee, wrapKey: wrapKey))
            #expect(released.status == .ok)
        }
    }

    @Test("the small-order list: each point gives X25519 no secret (with any key), random keys pass, bit 255 ignored")
    func smallOrderPoints() throws {
        for point in KeyWrapping.smallOrderPoints {
            #expect(!KeyWrapping.hasFullOrder(point))
            var high = point
            high[31] |= 0x80
            #expect(!KeyWrapping.hasFullOrder(high))
            let recipient = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: point)
            // Independent of the list: a Diffie-Hellman with it yields zero (or is refused).
            let secret = try? Curve25519.KeyAgreement.PrivateKey().sharedSecretFromKeyAgreement(with: recipient)
            #expect(secret.map { $0.withUnsafeBytes { $0.allSatisfy { $0 == 0 } } } ?? true)
        }
        for _ in 0..<64 {
            let key = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
            #expect(KeyWrapping.hasFullOrder(key))
        }
    }

    @Test(
        "the client fails closed: a KMS (or someone in between) that answers the key in the clear, or sealed to another key, is refused",
        arguments: [false, true])
    func clientRefusesDowngrade(sealedToAnotherKey: Bool) async throws {
        // A stand-in KMS on loopback that issues a well-formed challenge and then cheats.
        let router = Router()
        router.post("/challenge") { _, _ in
            KMSRoutes.json(
                ChallengeResponse(
                    challengeId: UUID().uuidString.lowercased(), nonce: [UInt8](repeating: 7, count: 32).hexString,
                    expiresAt: "2030-01-01T00:00:00.000Z"))
        }
        router.post("/get-key") { _, _ in
            if sealedToAnotherKey {
                let other = Curve25519.KeyAgreement.PrivateKey().publicKey
                let sealed = try KeyWrapping.seal(
                    SecretBytes([UInt8](repeating: 1, count: 32)), to: other, challengeId: "x")
                return KMSRoutes.json(GetKeyResponse(wrappedKey: Data(sealed).base64EncodedString()))
            }
            return KMSRoutes.json(GetKeyResponse(key: Data(repeating: 1, count: 32).base64EncodedString()))
        }
        let tee = try SoftwareTEE.initialize(
            directory: FileManager.default.temporaryDirectory.appendingPathComponent("downgrade-\(UUID())"),
            now: Int64(Date().timeIntervalSince1970))
        try await Application(router: router).test(.live) { client in
            let port = try #require(client.port)
            let kms = KeyReleaseClient(
                endpoint: .tcp(host: "127.0.0.1", port: port), identity: .generate(),
                quotes: SoftwareTEEQuoteSource(tee: tee))
            let error = await #expect(throws: KeyReleaseClientError.self) { _ = try await kms.fetchKey() }
            #expect(
                error?.message
                    == (sealedToAnotherKey
                        ? "the wrapped key does not open with this release's wrap key"
                        : "the KMS did not seal the key to the wrap key it was sent; refusing a key sent in the clear"))
        }
    }

    @Test("an independent HPKE (PyPI pyhpke) opens the wrapped key to the same bytes")
    func independentHPKE() async throws {
        let kms = try InProcessKMS()
        let caller = KMSCaller()
        let wrapPrivate = Curve25519.KeyAgreement.PrivateKey()
        let wrapKey = Array(wrapPrivate.publicKey.rawRepresentation)
        let answer = Mutex((wrapped: Data(), challengeId: ""))
        try await kms.test { client in
            let challenge = try await client.challenge(for: caller)
            let released = try await client.post(
                "/get-key", try caller.getKeyBody(challenge, tee: kms.tee, wrapKey: wrapKey))
            let response = try JSONDecoder().decode(GetKeyResponse.self, from: Data(buffer: released.body))
            let wrapped = try #require(response.wrappedKey.flatMap { Data(base64Encoded: $0) })
            answer.withLock { $0 = (wrapped, challenge.challengeId) }
        }
        let (wrapped, challengeId) = answer.withLock { $0 }
        let script = """
            import sys
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
            from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey
            private, wrapped, challenge_id = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
            suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)
            key = KEMKey.from_pyca_cryptography_key(X25519PrivateKey.from_private_bytes(private))
            info = b"keyrack-kms-v1 key release" + bytes([0]) + challenge_id.encode()
            recipient = suite.create_recipient_context(wrapped[:32], key, info=info)
            print(recipient.open(wrapped[32:], aad=b"").hex())
            """
        let result = try await offCooperativePool {
            try runProcessBlocking(
                URL(fileURLWithPath: "/usr/bin/env"),
                [
                    "python3", "-c", script, Array(wrapPrivate.rawRepresentation).hexString, Array(wrapped).hexString,
                    challengeId,
                ])
        }
        try #require(
            result.status == 0,
            "pyhpke could not run (install it: pip install pyhpke==0.6.5): \(String(decoding: result.errors, as: UTF8.self))"
        )
        let opened = String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let expected = try #require(Data(base64Encoded: try kms.expectedKey(for: caller.identity)))
        #expect(opened == Array(expected).hexString)
    }
}
