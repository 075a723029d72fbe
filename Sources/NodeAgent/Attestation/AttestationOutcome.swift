import TrustQuorum

/// Whether appraisal failures keep a peer out.
public enum AttestationMode: String, Sendable, Hashable, Codable {
    /// A peer whose evidence breaks the policy is refused (the default).
    case enforce
    /// Violations are reported but the peer is let through: for development
    /// only, and said loudly at start-up (``NodeAttestationPolicy/startupWarning``).
    case permissive
}

/// The kinds of evidence a node presents.
public enum EvidenceKind: String, Sendable, Hashable, CaseIterable {
    /// A measurement log signed by the node's software root of trust.
    case softwareRootOfTrust = "software root of trust"
    /// A TDX quote, verified with DCAP.
    case tdxQuote = "TDX quote"
}

/// A policy rule the peer's evidence broke. It names the rule and what was
/// measured, never the allowlist.
public struct AttestationViolation: Sendable, Hashable, CustomStringConvertible {
    /// The rule: `evidence kind`, `measurement 'executable'`, `MRTD`,
    /// `RTMR0`…`RTMR3`, `tcbStatus`.
    public let rule: String
    /// What was wrong.
    public let detail: String

    /// A violation of `rule`.
    public init(rule: String, detail: String) {
        self.rule = rule
        self.detail = detail
    }

    /// `rule: detail`.
    public var description: String { "\(rule): \(detail)" }
}

/// The result of a successful attestation exchange: who the peer is, what
/// evidence it showed, and (in permissive mode) which rules it broke.
public struct AttestationOutcome: Sendable, Hashable, CustomStringConvertible {
    /// The peer's platform id, from its verified certificate.
    public let peer: PlatformId
    /// The kind of evidence the peer presented.
    public let evidenceKind: EvidenceKind
    /// The mode the appraisal ran in.
    public let mode: AttestationMode
    /// The policy rules the peer's evidence broke: always empty in enforcing
    /// mode (a violation refuses the peer); in permissive mode the caller
    /// must log them loudly.
    public let violations: [AttestationViolation]

    /// Whether the peer's evidence met the policy.
    public var isCompliant: Bool { violations.isEmpty }

    /// One line for the log.
    public var description: String {
        if violations.isEmpty {
            return "peer \(peer) attested with \(evidenceKind.rawValue) evidence that meets the policy"
        }
        return "ATTESTATION NOT ENFORCED: peer \(peer) let through despite \(violations.count) policy violation(s) "
            + "in its \(evidenceKind.rawValue) evidence: "
            + violations.map(\.description).joined(separator: "; ")
    }
}
