/// Why a quote, a piece of collateral or a verification was refused.
///
/// Shaped like swift-certificates' `CertificateError`: one error type with a
/// stable ``code`` that callers match on, the verification ``step`` that
/// failed, and a human ``reason``. Equality and hashing consider only the
/// code and the step, so tests can compare against
/// `AttestationError(code:step:)` without repeating the reason. No reason ever
/// carries secret material: at most public measurements, dates and names.
public struct AttestationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong; stable across releases.
    public let code: Code
    /// The verification step that failed.
    public let step: Step
    /// A human explanation of this occurrence.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, step: Step, _ reason: String) {
        self.code = code
        self.step = step
        self.reason = reason
    }

    /// `<step>: <reason> [<code>]`.
    public var description: String { "\(step.rawValue): \(reason) [\(code.rawValue)]" }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code && lhs.step == rhs.step }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(step)
    }

    /// The DCAP verification steps, in the order the verifier runs them.
    public enum Step: String, Sendable, Hashable, CaseIterable {
        /// Reading the quote bytes.
        case parseQuote = "parse quote"
        /// Reading the collateral document and its parts.
        case parseCollateral = "parse collateral"
        /// Signature and freshness of the root CA and PCK CRLs.
        case crl = "CRL"
        /// The TCB info: signing chain, signature, issue and next-update dates.
        case tcbInfo = "TCB info"
        /// The QE identity: signing chain, signature, issue and next-update dates.
        case qeIdentity = "QE identity"
        /// The PCK certificate chain to the trust anchor, and its SGX extensions.
        case pckChain = "PCK certificate chain"
        /// The QE report's signature by the PCK leaf key.
        case qeReportSignature = "QE report signature"
        /// `QE report.report_data[0..32] == SHA-256(attestation key || QE auth data)`.
        case attestationKeyBinding = "attestation key binding"
        /// The QE report against the QE identity (MRSIGNER, ISVPRODID, masked
        /// MISCSELECT and ATTRIBUTES, QE TCB level).
        case qeIdentityMatch = "QE identity match"
        /// The quote's signature by the attestation key.
        case quoteSignature = "quote signature"
        /// Matching the platform and the TDX module against the TCB levels.
        case tcbStatus = "TCB status"
        /// The TD's attributes and, for TD 1.5, MRSERVICETD.
        case tdAttributes = "TD attributes"
    }

    /// Stable error codes.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The quote is too short for a field, or a length points past its end.
        case truncated
        /// A field holds a value the format does not allow.
        case malformed
        /// The quote is well formed but is not a TDX quote (for example an SGX quote).
        case notTDXQuote
        /// A version, key type, body type or certification-data type we do not support.
        case unsupported
        /// A certificate, CRL or JSON document could not be decoded.
        case decodingFailed
        /// A signature does not verify.
        case invalidSignature
        /// A certificate chain does not lead to the trust anchor.
        case untrustedChain
        /// A certificate is outside its validity period at `now`.
        case certificateExpired
        /// A certificate appears on its issuer's CRL.
        case certificateRevoked
        /// No CRL from a certificate's issuer was supplied.
        case crlMissing
        /// A CRL's next update is before `now`.
        case crlExpired
        /// A CRL's this-update is after `now`.
        case crlNotYetValid
        /// A TCB info or QE identity has an issue date after `now`.
        case collateralNotYetValid
        /// A TCB info or QE identity has a next update before `now`.
        case collateralExpired
        /// No valid collateral could be had for the platform (a PCCS down,
        /// unknown FMSPC, a tampered or stale answer): not the quote's fault.
        case collateralUnavailable
        /// A value that must match does not (hash, identity, FMSPC, ...).
        case mismatch
        /// No TCB level of the TCB info (or of the QE identity, or the TDX
        /// module identity) matches the platform.
        case noMatchingTCBLevel
        /// The matching TCB level is `Revoked`.
        case tcbRevoked
        /// The TD runs in debug mode, or with TD profiling.
        case debugTD
        /// A TD attribute or TD 1.5 field the verifier refuses: a reserved bit,
        /// MIGRATABLE, SERVTD_EXT, SEPT_VE_DISABLE clear, or a non-zero MRSERVICETD.
        case tdAttributeRefused
        /// A matched TCB level carries a status its structure may not (for
        /// example `SWHardeningNeeded` in a QE or TDX module identity).
        case unrecognizedTCBStatus
    }
}

/// The result of one DCAP rule, as in swift-certificates' `PolicyEvaluationResult`.
enum RuleResult: Sendable, Equatable {
    /// The rule holds.
    case meetsPolicy
    /// The rule does not hold; the error names the step and the reason.
    case failsToMeetPolicy(AttestationError)
}
