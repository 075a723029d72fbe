import Attestation
import Crypto
import Foundation
import KeyrackCore
import Logging
import Synchronization

/// The key-release pipeline, independent of HTTP: each method takes a
/// decoded request and returns the answer or a ``KMSError`` with its code.
///
/// `getKey` runs the steps in the order the specification fixes: readiness
/// (the challenge is not consumed when the policy or collateral is missing),
/// consume the challenge, signature, parse, report-data binding, DCAP
/// verification, policy, key derivation. Every outcome is written to the
/// audit log as one line with the peer id and the outcome — never a nonce,
/// key, quote or signature.
public final class KeyReleaseService<Verifier: EvidenceVerifier>: Sendable {
    /// Tunables (`CHALLENGE_TTL_SECS`, `MAX_PENDING_CHALLENGES`,
    /// `MAX_PENDING_CHALLENGES_TOTAL`, `KEY_NAMESPACE_PREFIX`).
    public struct Settings: Sendable {
        public var challengeTTL: Duration
        public var maximumPending: Int
        public var maximumPendingTotal: Int
        public var namespace: String
        /// How far a challenge proof's `time` may be from this server's clock.
        public var proofWindow: Duration

        public init(
            challengeTTL: Duration = .seconds(300),
            maximumPending: Int = 8,
            maximumPendingTotal: Int = 100_000,
            namespace: String = "keyrack/storage",
            proofWindow: Duration = .seconds(60)
        ) {
            self.challengeTTL = challengeTTL
            self.maximumPending = maximumPending
            self.maximumPendingTotal = maximumPendingTotal
            self.namespace = namespace
            self.proofWindow = proofWindow
        }
    }

    public let settings: Settings
    package let store: any ChallengeStore
    let keys: any KeyProvider
    let policies: PolicyHolder
    package let verifier: Verifier
    let now: @Sendable () -> Date
    let audit: Logger
    public let metrics: KMSMetrics
    /// The last readiness reported in the log, so that a probe every second logs only changes.
    private let lastReadiness = Mutex("")
    /// Proofs already verified, while inside their window.
    private let verifiedProofs = VerifiedProofs()

    public init(
        settings: Settings = Settings(),
        store: any ChallengeStore,
        keys: any KeyProvider,
        policies: PolicyHolder,
        verifier: Verifier,
        metrics: KMSMetrics = KMSMetrics(),
        audit: Logger = Logger(label: "keyrack.kms.audit"),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.settings = settings
        self.store = store
        self.keys = keys
        self.policies = policies
        self.verifier = verifier
        self.metrics = metrics
        self.audit = audit
        self.now = now
    }

    // MARK: - POST /challenge

    /// Issues a challenge to `request.peerId`.
    public func challenge(_ request: ChallengeRequest) async throws(KMSError) -> ChallengeResponse {
        let result: Result<ChallengeResponse, KMSError>
        do {
            result = .success(try await issue(request))
        } catch {
            if let detail = error.detail {
                audit.warning(
                    "challenge refused", metadata: ["outcome": "\(error.code.rawValue)", "detail": "\(detail)"])
            }
            result = .failure(error)
        }
        metrics.recordChallenge(result.failureCode, proven: request.proof != nil)
        return try result.get()
    }

    private func issue(_ request: ChallengeRequest) async throws(KMSError) -> ChallengeResponse {
        let peer: PeerID
        do {
            peer = try PeerID(request.peerId)
        } catch {
            throw KMSError(.invalidPeerId, error.description)
        }
        let budget = try proveBudget(request, peer: peer)
        var random = SystemRandomSource()
        let requested = Challenge(
            id: UUID(),
            nonce: random.bytes(32),
            peerId: peer.string,
            expiresAt: now().addingTimeInterval(settings.challengeTTL.seconds),
            budget: budget
        )
        let stored: Challenge
        do {
            stored = try await store.issue(
                requested,
                limits: ChallengeLimits(perPeer: settings.maximumPending, total: settings.maximumPendingTotal)
            )
        } catch {
            switch error {
            case .rateLimited(let retryAfter):
                let seconds = max(1, Int(retryAfter.seconds.rounded(.up)))
                let which = budget == .proven ? "proven" : "anonymous"
                throw KMSError(
                    .rateLimited,
                    "peer has \(settings.maximumPending) pending \(which) challenges; retry in \(seconds) s",
                    retryAfterSeconds: seconds
                )
            case .full(let retryAfter):
                let seconds = max(1, Int(retryAfter.seconds.rounded(.up)))
                throw KMSError(
                    .rateLimited, "the service holds its maximum of pending challenges; retry in \(seconds) s",
                    retryAfterSeconds: seconds)
            case .unavailable(let reason):
                throw KMSError(.storeUnavailable, "the challenge store is unavailable", detail: reason)
            }
        }
        return ChallengeResponse(
            challengeId: stored.id.uuidString.lowercased(),
            nonce: stored.nonce.hexString,
            expiresAt: stored.expiresAt.rfc3339
        )
    }

    /// The budget a challenge request counts against: `proven` when it
    /// carries a valid proof of possession of the peer key, `anonymous`
    /// without one. A proof that is malformed, out of its time window or
    /// does not verify is refused — never downgraded to anonymous.
    private func proveBudget(_ request: ChallengeRequest, peer: PeerID) throws(KMSError) -> ChallengeBudget {
        switch (request.time, request.proof) {
        case (nil, nil):
            return .anonymous
        case (let time?, let proof?):
            guard let signature = Data(base64Encoded: proof), signature.count == 64 else {
                throw KMSError(.invalidRequest, "proof is not a base64 Ed25519 signature (64 bytes)")
            }
            let clock = Int64(now().timeIntervalSince1970.rounded(.down))
            let window = Int64(settings.proofWindow.components.seconds)
            guard time >= clock - window, time <= clock + window else {
                throw KMSError(
                    .invalidSignature, "the proof's time is more than \(window) s from the server's clock")
            }
            let key = VerifiedProofs.Key(peer: peer.string, time: time, signature: signature)
            if verifiedProofs.contains(key) { return .proven }
            guard peer.isValidSignature(signature, for: ChallengeProof.message(peerId: peer.string, time: time)) else {
                throw KMSError(.invalidSignature, "the proof does not verify with the peer's key")
            }
            verifiedProofs.insert(key, now: clock, window: window)
            return .proven
        default:
            throw KMSError(.invalidRequest, "time and proof must be given together")
        }
    }

    // MARK: - POST /get-key

    /// Runs the verification pipeline and derives the key.
    public func getKey(_ request: GetKeyRequest) async throws(KMSError) -> GetKeyResponse {
        var peer = "-"
        var field: String?
        let start = ContinuousClock.now
        let result: Result<GetKeyResponse, KMSError>
        do {
            result = .success(try await release(request, peer: &peer))
        } catch {
            field = error.field
            result = .failure(error)
        }
        let outcome = result.failureCode?.rawValue ?? "Released"
        var metadata: Logger.Metadata = ["peer": "\(peer)", "outcome": "\(outcome)"]
        if let field { metadata["policyField"] = "\(field)" }
        if case .failure(let error) = result {
            metadata["reason"] = "\(error.message)"
            if let detail = error.detail { metadata["detail"] = "\(detail)" }
        }
        audit.info("key release", metadata: metadata)
        metrics.recordKeyRelease(result.failureCode, duration: ContinuousClock.now - start)
        return try result.get()
    }

    private func release(_ request: GetKeyRequest, peer: inout String) async throws(KMSError) -> GetKeyResponse {
        // Syntax first: nothing is consumed for a request that cannot be read.
        guard let id = UUID(uuidString: request.challengeId) else {
            throw KMSError(.invalidRequest, "challengeId is not a UUID")
        }
        guard let quote = Data(base64Encoded: request.quote), !quote.isEmpty else {
            throw KMSError(.invalidRequest, "quote is not base64")
        }
        guard let signature = Data(base64Encoded: request.signature) else {
            throw KMSError(.invalidRequest, "signature is not base64")
        }
        // The wrap key: checked, and the HPKE context made, before anything is spent.
        var wrapKey: [UInt8]?
        var sealer: HPKE.Sender?
        if let text = request.wrapKey {
            guard let raw = Data(base64Encoded: text), raw.count == 32,
                let recipient = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw),
                KeyWrapping.hasFullOrder(Array(raw)),
                let sender = try? HPKE.Sender(
                    recipientKey: recipient, ciphersuite: KeyWrapping.ciphersuite,
                    info: KeyWrapping.info(challengeId: request.challengeId))
            else {
                throw KMSError(.invalidRequest, "wrapKey is not a base64 X25519 public key (32 bytes)")
            }
            wrapKey = Array(raw)
            sealer = sender
        }

        // 0. Readiness: the challenge stays unspent so the node can retry.
        guard let policy = policies.policy else {
            throw KMSError(
                .policyNotReady, "no attestation policy is loaded", detail: policies.lastError ?? "not loaded")
        }
        // The quote's platform first: preparing may refresh stale collateral.
        let instant = now()
        if let reason = await verifier.prepare(quote: [UInt8](quote), now: instant) {
            throw KMSError(.policyNotReady, "collateral for this platform is not ready", detail: reason)
        }
        if let reason = verifier.notReadyReason(now: instant) {
            throw KMSError(.policyNotReady, "collateral is not ready", detail: reason)
        }

        // 1. Consume the challenge (atomic, one-time).
        let challenge: Challenge
        do {
            guard let found = try await store.consume(id) else {
                throw KMSError(.invalidChallenge, "unknown, already used or expired challenge")
            }
            challenge = found
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.storeUnavailable, "the challenge store is unavailable", detail: "\(error)")
        }
        peer = challenge.peerId

        // 2. The peer's signature over the raw nonce.
        guard let peerId = try? PeerID(challenge.peerId),
            peerId.isValidSignature(signature, for: challenge.nonce)
        else {
            throw KMSError(.invalidSignature, "the signature does not verify with the peer's key over the nonce")
        }

        // 3. Parse.
        let parsed: Verifier.Parsed
        do {
            parsed = try verifier.parse(quote: Array(quote))
        } catch {
            throw KMSError(.invalidQuote, error.reason)
        }

        // 4. Binding: report_data = nonce ‖ SHA-256(peerId [‖ 0x00 ‖ wrapKey]).
        let expected = KeyWrapping.reportData(nonce: challenge.nonce, peerId: challenge.peerId, wrapKey: wrapKey)
        let reportData = verifier.reportData(of: parsed)
        // The buffer overload: the generic one is not specialized across
        // modules and cost 3.6 % of the server's time in metadata look-ups.
        let bound = reportData.withUnsafeBytes { actual in
            expected.withUnsafeBytes { constantTimeEqual(actual, $0) }
        }
        guard bound else {
            if wrapKey != nil {
                let plain = KeyWrapping.reportData(nonce: challenge.nonce, peerId: challenge.peerId, wrapKey: nil)
                if reportData.withUnsafeBytes({ actual in plain.withUnsafeBytes { constantTimeEqual(actual, $0) } }) {
                    throw KMSError(.invalidQuote, "report_data mismatch: the quote does not bind the wrapKey")
                }
            }
            throw KMSError(.invalidQuote, "report_data mismatch")
        }

        // 5. DCAP verification.
        let measured: MeasuredState
        do {
            measured = try verifier.verify(parsed, now: now())
        } catch {
            throw KMSError(.invalidQuote, error.reason)
        }

        // 6. Policy.
        if let field = policy.violation(for: measured) {
            throw KMSError(.policyViolation, "\(field) is not allowed by the policy", field: field)
        }

        // 7. Derive.
        let key: SecretBytes
        do {
            key = try await keys.deriveKey(namespace: settings.namespace, peerId: challenge.peerId)
        } catch {
            throw KMSError(
                .keyDerivationFailed, "the key provider failed", detail: "key provider \(keys.name): \(error.reason)")
        }
        guard var sealer else {
            return GetKeyResponse(key: key.withUnsafeBytes { Data($0).base64EncodedString() })
        }
        do {
            let sealed = try key.withUnsafeBytes { try sealer.seal($0, authenticating: Data()) }
            metrics.recordWrapped()
            return GetKeyResponse(wrappedKey: (sealer.encapsulatedKey + sealed).base64EncodedString())
        } catch {
            throw KMSError(.keyDerivationFailed, "the key could not be sealed to the wrapKey", detail: "\(error)")
        }
    }

    // MARK: - Readiness

    /// A part of the service that can be not ready, as `/readyz` names it.
    public enum Component: String, Sendable, CaseIterable, Codable {
        case policy, collateral, store, keys
    }

    /// What is not ready, each part with its reason for the log (paths,
    /// hosts, ports); `/readyz` answers 503 naming only the parts. Empty when ready.
    public func notReady() async -> [(component: Component, detail: String)] {
        var parts: [(Component, String)] = []
        if policies.policy == nil { parts.append((.policy, policies.lastError ?? "not loaded")) }
        if let reason = verifier.notReadyReason(now: now()) { parts.append((.collateral, reason)) }
        do {
            try await store.checkReady()
        } catch {
            parts.append((.store, error.description))
        }
        do {
            try await keys.checkReady()
        } catch {
            parts.append((.keys, "key provider \(keys.name): \(error.reason)"))
        }
        let summary = parts.map { "\($0.0.rawValue): \($0.1)" }.joined(separator: "; ")
        let changed = lastReadiness.withLock { last in
            defer { last = summary }
            return last != summary
        }
        if changed {
            if parts.isEmpty {
                audit.info("ready")
            } else {
                audit.warning("not ready", metadata: ["detail": "\(summary)"])
            }
        }
        return parts
    }
}

/// Challenge proofs whose Ed25519 signature verified, by their exact bytes,
/// until their time leaves the window: Ed25519 signatures are
/// deterministic, so a peer that asks for several challenges within one
/// second sends the same proof, and verifying it again (the largest cost of
/// `/challenge`) would only give the same answer. Bytes never verified, or
/// different in any bit, are verified in full. Bounded: past ``capacity``,
/// entries out of the window go, then everything.
final class VerifiedProofs: Sendable {
    struct Key: Hashable {
        let peer: String
        let time: Int64
        let signature: Data
    }

    static let capacity = 8_192
    private let entries = Mutex([Key: Void]())

    func contains(_ key: Key) -> Bool { entries.withLock { $0[key] != nil } }

    func insert(_ key: Key, now: Int64, window: Int64) {
        entries.withLock { entries in
            if entries.count >= Self.capacity {
                entries = entries.filter { abs($0.key.time - now) <= window }
                if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[key] = ()
        }
    }
}

extension Result where Failure == KMSError {
    var failureCode: KMSError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension Date {
    /// RFC 3339 in UTC with milliseconds (`2026-11-21T06:42:14.123Z`).
    /// Written by hand: a date formatter per challenge cost a sixth of the
    /// service's time under load.
    var rfc3339: String {
        let milliseconds = Int64((timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(milliseconds.quotientAndRemainder(dividingBy: 1000).quotient)
        let fraction = Int(milliseconds - Int64(seconds) * 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(fraction), 3))Z"
    }
}
