import Foundation
import KeyrackCore
import NIOCore
import SecretSharing
import Synchronization
import TrustQuorum
import X509

/// Attestation between trust-quorum nodes, inside the mutually
/// authenticated TLS channel and before any protocol frame (share) moves.
///
/// Both sides run the same exchange as the first frames on a channel that
/// ``PeerTransport`` just established (frames in ``AttestationFrame``):
///
/// 1. each sends a fresh 32-byte nonce;
/// 2. each sends evidence whose report data is its ``ChannelBinding`` value
///    (both nonces, both certificates, its own role and platform id): a
///    measurement log signed by its root of trust, or a TDX quote;
/// 3. each appraises the other's evidence — binding, signature or DCAP
///    verification, then the policy's allowlists — and sends its verdict:
///    *accepted*, or *refused* with the reason (the rule that failed, never
///    the allowlist), after which it closes the channel. A side that fails
///    on its own (no evidence, its deadline passed) sends *aborted* instead.
///
/// ``attest(_:inbound:outbound:)`` returns once the peer accepted this node
/// and this node accepted the peer. In permissive mode, policy violations
/// (allowlists, evidence kind) are reported in the ``AttestationOutcome``
/// instead of refusing the peer; evidence that cannot be trusted at all (a
/// wrong binding, a bad signature, a quote that fails DCAP) is refused in
/// every mode.
public struct ChannelAttestor: Sendable, CustomStringConvertible {
    let rootOfTrust: any RootOfTrust
    /// Where this node's evidence comes from.
    public let evidence: NodeEvidenceSource
    /// Where the policy peers are appraised against comes from: a fixed
    /// one, or the node's ``NodePolicyStore`` (it changes while the node runs).
    let policies: @Sendable () -> NodeAttestationPolicy
    /// What is required of peers now. Each exchange reads it once, at its start.
    public var policy: NodeAttestationPolicy { policies() }
    /// How long the whole exchange may take.
    public let timeout: Duration
    let now: @Sendable () -> Date
    /// What ``timeout`` is measured on.
    let clock: any Clock<Duration>

    /// An attestor that signs (software evidence) with `rootOfTrust`, shows
    /// evidence from `evidence`, and appraises peers against `policy`; an
    /// exchange that takes longer than `timeout`, measured on `clock`, fails.
    public init(
        rootOfTrust: any RootOfTrust,
        evidence: NodeEvidenceSource,
        policy: NodeAttestationPolicy,
        timeout: Duration = .seconds(5),
        now: @escaping @Sendable () -> Date = { Date() },
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.init(
            rootOfTrust: rootOfTrust, evidence: evidence, policies: { policy }, timeout: timeout, now: now,
            clock: clock)
    }

    /// An attestor that appraises peers against the policy `store` holds
    /// at the start of each exchange: an operator's update or a reloaded
    /// file applies to the next channel without a restart.
    public init(
        rootOfTrust: any RootOfTrust,
        evidence: NodeEvidenceSource,
        store: NodePolicyStore,
        timeout: Duration = .seconds(5),
        now: @escaping @Sendable () -> Date = { Date() },
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.init(
            rootOfTrust: rootOfTrust, evidence: evidence, policies: { store.policy }, timeout: timeout, now: now,
            clock: clock)
    }

    private init(
        rootOfTrust: any RootOfTrust,
        evidence: NodeEvidenceSource,
        policies: @escaping @Sendable () -> NodeAttestationPolicy,
        timeout: Duration,
        now: @escaping @Sendable () -> Date,
        clock: any Clock<Duration>
    ) {
        self.rootOfTrust = rootOfTrust
        self.evidence = evidence
        self.policies = policies
        self.timeout = timeout
        self.now = now
        self.clock = clock
    }

    /// The policy's loud start-up warning when attestation is not enforced.
    public var startupWarning: String? { policy.startupWarning }

    /// Measures this node's files now (software root of trust) and returns
    /// the measurement log, or `nil` for TDX evidence. Call it at start-up:
    /// the first exchange then finds the digests in the cache instead of
    /// hashing the executable under its deadline, and a file that cannot be
    /// measured stops the node early rather than failing every channel.
    public func prepare() throws(NodeEvidenceError) -> MeasurementLog? {
        try evidence.prepare()
    }

    /// The evidence kind, mode and timeout; never the root of trust.
    public var description: String {
        "ChannelAttestor(\(evidence), mode: \(policy.mode.rawValue), timeout: \(timeout))"
    }

    /// Runs the exchange on a channel that ``PeerTransport`` just
    /// established, as the first frames on it.
    ///
    /// Returns when both sides' evidence was sent and the peer's evidence
    /// appraised (and the peer accepted ours). Throws ``PeerChannelError``
    /// with the reason — the failed rule, never an allowlist or a secret —
    /// if the peer is refused (a refusal frame is sent and the channel
    /// closed), if the peer refused this node or aborted (its reason is
    /// quoted), if this node cannot produce its evidence, on a malformed
    /// frame, when the connection closes, or after ``timeout``.
    /// After an error the channel is closed; do not use it for anything else.
    public func attest(
        _ channel: PeerChannel,
        inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws(PeerChannelError) -> AttestationOutcome {
        let exchange = Exchange(attestor: self, channel: channel, outbound: outbound)
        let result = await withTaskGroup(of: Void.self) { group in
            group.addTask { [timeout, clock] in
                guard (try? await clock.sleep(for: timeout)) != nil else { return }
                await exchange.expire()
            }
            let result = await exchange.run(&inbound)
            group.cancelAll()
            return result
        }
        return try result.get()
    }
}

/// One run of the exchange.
private final class Exchange: Sendable {
    let attestor: ChannelAttestor
    let channel: PeerChannel
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    /// The policy in force when the exchange began: one exchange is judged by one policy.
    let policy: NodeAttestationPolicy
    /// What the exchange waits for, whether the deadline passed, and whether
    /// the exchange ended (after which the deadline changes nothing).
    let progress = Mutex<(waitingFor: String, expired: Bool, ended: Bool)>(("nonce", false, false))

    init(attestor: ChannelAttestor, channel: PeerChannel, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.attestor = attestor
        self.channel = channel
        self.outbound = outbound
        self.policy = attestor.policy
    }

    typealias Inbound = NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator

    func run(_ inbound: inout Inbound) async -> Result<AttestationOutcome, PeerChannelError> {
        let result: Result<AttestationOutcome, PeerChannelError>
        do throws(PeerChannelError) {
            result = .success(try await exchange(&inbound))
        } catch {
            result = .failure(error)
        }
        // A success that raced the deadline is a timeout: the channel is being closed.
        let expired = progress.withLock { state in
            state.ended = true
            return state.expired
        }
        if expired, case .success = result { return .failure(failure("")) }
        return result
    }

    /// The deadline passed: tell the peer, briefly, and close the channel.
    func expire() async {
        let waitingFor: String? = progress.withLock { state in
            guard !state.ended else { return nil }
            state.expired = true
            return state.waitingFor
        }
        guard let waitingFor else { return }
        let outbound = self.outbound
        let clock = attestor.clock
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await outbound.write(
                    AttestationFrame.aborted("timed out waiting for this node's \(waitingFor)").buffer)
            }
            group.addTask { try? await clock.sleep(for: .milliseconds(100)) }
            await group.next()
            group.cancelAll()
        }
        try? await channel.channel.channel.close()
    }

    private func exchange(_ inbound: inout Inbound) async throws(PeerChannelError) -> AttestationOutcome {
        let local: (platform: PlatformId, certificate: Certificate)
        do {
            let certificate = try Certificate(derEncoded: channel.localCertificateDER)
            local = (try PlatformIdentity.platformId(of: certificate.subject), certificate)
        } catch {
            throw await abort("its certificate names no platform", &inbound)
        }
        if attestor.evidence.kind == .softwareRootOfTrust, attestor.rootOfTrust.publicKey != local.certificate.publicKey
        {
            throw await abort("its root of trust does not hold the key of its certificate", &inbound)
        }

        var random = SystemRandomSource()
        let ourNonce = random.bytes(ChannelBinding.nonceSize)
        try await send(.nonce(ourNonce))
        guard case .nonce(let peerNonce) = try await receive(&inbound, "nonce") else {
            throw await refuse("expected a nonce frame", &inbound)
        }
        let binding = ChannelBinding(channel: channel, ourNonce: ourNonce, peerNonce: peerNonce)

        let ours: NodeEvidence
        do {
            ours = try await attestor.evidence.evidence(
                binding: binding.value(sender: local.platform, role: channel.role), rootOfTrust: attestor.rootOfTrust)
        } catch {
            throw await abort("it could not produce its evidence: \(error.reason)", &inbound)
        }
        try await send(.evidence(ours))
        guard case .evidence(let theirs) = try await receive(&inbound, "evidence") else {
            throw await refuse("expected an evidence frame", &inbound)
        }

        let violations: [AttestationViolation]
        let now = attestor.now()
        let collateral = await policy.collateral(for: theirs, now: now)
        do {
            violations = try policy.appraise(
                theirs,
                binding: binding.value(sender: channel.peer, role: channel.role == .client ? .server : .client),
                peerKey: channel.peerCertificate.publicKey,
                now: now, collateral: collateral)
        } catch {
            throw await refuse(error.violation.description, &inbound)
        }
        if !violations.isEmpty, policy.mode == .enforce {
            throw await refuse(violations.map(\.description).joined(separator: "; "), &inbound)
        }
        try await send(.accepted)
        guard case .accepted = try await receive(&inbound, "verdict") else {
            throw await refuse("expected an acceptance or a refusal", &inbound)
        }
        return AttestationOutcome(
            peer: channel.peer, evidenceKind: theirs.kind, mode: policy.mode, violations: violations)
    }

    private func send(_ frame: AttestationFrame) async throws(PeerChannelError) {
        do {
            try await outbound.write(frame.buffer)
        } catch {
            throw failure("cannot send this node's \(frame.name)")
        }
    }

    /// The next frame, which must be an attestation frame; a refusal from the
    /// peer ends the exchange with its reason.
    private func receive(_ inbound: inout Inbound, _ what: String) async throws(PeerChannelError)
        -> AttestationFrame
    {
        progress.withLock { $0.waitingFor = what }
        let frame: ByteBuffer?
        do {
            frame = try await inbound.next()
        } catch {
            throw await refuse("unreadable frame from the peer: \(error) (waiting for the peer's \(what))", &inbound)
        }
        guard let frame else { throw failure("the connection closed while waiting for the peer's \(what)") }
        let parsed: AttestationFrame
        do {
            parsed = try AttestationFrame(parsing: frame)
        } catch {
            throw await refuse("\(error.reason) (waiting for the peer's \(what))", &inbound)
        }
        switch parsed {
        case .refused(let reason):
            throw PeerChannelError(.refusedByPeer, "peer \(channel.peer) refused this node's attestation: \(reason)")
        case .aborted(let reason):
            throw PeerChannelError(.abortedByPeer, "peer \(channel.peer) aborted the attestation: \(reason)")
        case .nonce, .evidence, .accepted:
            break
        }
        return parsed
    }

    /// An error for a failed exchange, or the timeout if that is what ended it.
    private func failure(_ reason: String) -> PeerChannelError {
        let (waitingFor, expired) = progress.withLock { ($0.waitingFor, $0.expired) }
        if expired {
            return PeerChannelError(
                .timeout,
                "attestation with peer \(channel.peer) timed out after \(attestor.timeout) waiting for its \(waitingFor)"
            )
        }
        return PeerChannelError(.closed, "attestation with peer \(channel.peer) failed: \(reason)")
    }

    /// Refuses the peer: sends a refusal frame with `reason`, waits for the
    /// peer to close or refuse in turn (so the refusal is not lost to a
    /// reset; bounded by the deadline), closes the channel, and returns the
    /// error to throw.
    private func refuse(_ reason: String, _ inbound: inout Inbound) async -> PeerChannelError {
        if progress.withLock({ $0.expired }) { return failure(reason) }
        await end(with: .refused(reason), &inbound)
        return PeerChannelError(.refused, "refused peer \(channel.peer): \(AttestationFrame.clean(reason))")
    }

    /// Gives up because of a failure on this node's side (`reason` speaks of
    /// this node in the third person, as the peer will read it): sends an
    /// abort frame, then as ``refuse(_:_:)``.
    private func abort(_ reason: String, _ inbound: inout Inbound) async -> PeerChannelError {
        if progress.withLock({ $0.expired }) { return failure(reason) }
        await end(with: .aborted(reason), &inbound)
        return PeerChannelError(
            .aborted, "attestation with peer \(channel.peer) aborted: \(AttestationFrame.clean(reason))")
    }

    private func end(with frame: AttestationFrame, _ inbound: inout Inbound) async {
        try? await outbound.write(frame.buffer)
        while let next = try? await inbound.next() {
            if (try? AttestationFrame(parsing: next))?.isFinal == true { break }
        }
        try? await channel.channel.channel.close()
    }
}
