import Attestation
import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import X509
import _CryptoExtras

/// Evidence that cannot be trusted at all — wrong binding, bad signature,
/// a quote that fails DCAP, a kind the policy cannot check — as opposed to
/// a policy violation. It refuses the peer in every mode.
struct AppraisalFailure: Error, Equatable {
    let violation: AttestationViolation

    init(rule: String, _ detail: String) { violation = AttestationViolation(rule: rule, detail: detail) }
}

extension NodeAttestationPolicy {
    /// Appraises a peer's evidence, a pure function of its inputs.
    ///
    /// - Parameters:
    ///   - binding: the report data the peer's evidence must carry
    ///     (``ChannelBinding/value(sender:role:)`` for the peer).
    ///   - peerKey: the public key of the peer's verified certificate.
    ///   - collateral: for a TDX quote, its collateral as ``collateral(for:now:)``
    ///     found it (from the directory or the PCCS).
    /// - Returns: the policy rules the evidence breaks (empty if none).
    /// - Throws: ``AppraisalFailure`` when the evidence cannot be trusted.
    func appraise(
        _ evidence: NodeEvidence, binding: [UInt8], peerKey: Certificate.PublicKey, now: Date,
        collateral: Result<Collateral, AttestationError>?
    ) throws(AppraisalFailure) -> [AttestationViolation] {
        switch evidence {
        case .softwareRootOfTrust(let software):
            guard software.reportData == binding else { throw Self.bindingFailure }
            let message = SoftwareEvidence.signedMessage(reportData: software.reportData, log: software.log)
            guard Self.isValid(software.signature, for: message, by: peerKey) else {
                throw AppraisalFailure(
                    rule: "evidence signature", "the measurement log is not signed by the key of the peer's certificate"
                )
            }
            guard let policy = softwareRootOfTrust else {
                return [.init(rule: "evidence kind", detail: "the policy accepts no software root-of-trust evidence")]
            }
            return policy.violations(software.log)
        case .tdxQuote(let bytes):
            let quote: Quote
            do {
                quote = try Quote(bytes: bytes)
            } catch {
                throw AppraisalFailure(rule: "TDX quote", error.description)
            }
            guard Array(quote.report.reportData) == NodeEvidence.tdxReportData(binding: binding) else {
                throw Self.bindingFailure
            }
            guard let tdx else {
                throw AppraisalFailure(rule: "evidence kind", "the policy accepts no TDX quotes")
            }
            let verified: VerifiedQuote
            do throws(AttestationError) {
                guard let found = try collateral?.get() else {
                    throw AttestationError(
                        .collateralUnavailable, step: .parseCollateral, "no collateral was found for the quote")
                }
                verified = try tdx.verifier.verify(
                    quote: quote, collateral: found, now: Int64(now.timeIntervalSince1970))
            } catch {
                throw AppraisalFailure(rule: "TDX quote verification", error.description)
            }
            let state = MeasuredState(
                mrtd: Array(verified.report.mrTD), rtmrs: verified.report.rtmrs.map(Array.init),
                tcbStatus: verified.status.rawValue)
            return tdx.measurements.rules.filter { !$0.allows(state) }.map { rule in
                AttestationViolation(
                    rule: rule.field, detail: "the TD's value \(Self.value(of: rule.field, in: state)) is not allowed")
            }
        }
    }

    /// The collateral a peer's TDX quote needs, found before appraisal so
    /// that appraisal itself does no I/O: from the collateral directory, or
    /// from the PCCS (which may fetch). `nil` for other evidence, without a
    /// TDX section, or for bytes that are not a quote (appraisal reports those).
    func collateral(for evidence: NodeEvidence, now: Date) async -> Result<Collateral, AttestationError>? {
        guard case .tdxQuote(let bytes) = evidence, let tdx, let quote = try? Quote(bytes: bytes) else { return nil }
        do throws(AttestationError) {
            return .success(try await tdx.collateral(for: quote, now: now))
        } catch {
            return .failure(error)
        }
    }

    /// The measured value a TDX rule looked at (`MRTD`, `RTMR0`…`RTMR3`, `tcbStatus`).
    static func value(of field: String, in state: MeasuredState) -> String {
        if field == "MRTD" { return state.mrtd.hexString }
        if field == "tcbStatus" { return state.tcbStatus }
        guard field.hasPrefix("RTMR"), let index = Int(field.dropFirst(4)), state.rtmrs.indices.contains(index) else {
            return "?"
        }
        return state.rtmrs[index].hexString
    }

    static let bindingFailure = AppraisalFailure(
        rule: "channel binding",
        "the evidence is not bound to this channel's nonces, certificates and the peer's platform id "
            + "(replayed or relayed?)")

    /// Whether `signature` over `message` verifies under `key` (Ed25519, or
    /// RSA-PSS with SHA-256 as ``RootOfTrust/sign(_:)`` makes it).
    static func isValid(_ signature: [UInt8], for message: [UInt8], by key: Certificate.PublicKey) -> Bool {
        if let ed25519 = Curve25519.Signing.PublicKey(key) {
            return ed25519.isValidSignature(signature, for: message)
        }
        if let rsa = _RSA.Signing.PublicKey(key) {
            return rsa.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: message, padding: .PSS)
        }
        return false
    }
}
