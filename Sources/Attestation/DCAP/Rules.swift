import Crypto
import KeyrackCore

/// What the DCAP rules look at: the parsed quote, collateral and PCK chain
/// that passed the time-independent checks, and the instant of verification.
struct Evidence {
    let quote: Quote
    let collateral: VerifiedCollateral
    let pck: VerifiedChain
    let pckExtensions: PCKExtensions
    let now: Int64
    let cache: VerificationCache
    /// Whether the relying party allows service TDs (SERVTD_EXT, a non-zero MRSERVICETD).
    var allowServiceTD = false
}

/// One DCAP rule, shaped like swift-certificates' `VerifierPolicy`: a small
/// type that says whether the evidence meets it and, if not, why.
protocol DCAPRule: Sendable {
    func evaluate(_ evidence: Evidence) -> RuleResult
}

/// The CRLs must be current: `now ≤ nextUpdate` (``checkThisUpdate`` false),
/// or `thisUpdate ≤ now` (true).
struct CRLFreshnessRule: DCAPRule {
    var checkThisUpdate = false

    func evaluate(_ e: Evidence) -> RuleResult {
        for (name, crl) in [("root CA", e.collateral.rootCRL), ("PCK", e.collateral.pckCRL)] {
            if checkThisUpdate, e.now < crl.thisUpdate {
                return .failsToMeetPolicy(
                    AttestationError(
                        .crlNotYetValid, step: .crl,
                        "the \(name) CRL is not yet valid: thisUpdate \(formatISO8601(crl.thisUpdate)) is after now (\(formatISO8601(e.now)))"
                    ))
            }
            if !checkThisUpdate, e.now > crl.nextUpdate {
                return .failsToMeetPolicy(
                    AttestationError(
                        .crlExpired, step: .crl,
                        "the \(name) CRL expired: nextUpdate \(formatISO8601(crl.nextUpdate)) is before now (\(formatISO8601(e.now)))"
                    ))
            }
        }
        return .meetsPolicy
    }
}

/// The TCB info or the QE identity must be current: `issueDate ≤ now ≤ nextUpdate`.
struct CollateralDatesRule: DCAPRule {
    let step: AttestationError.Step

    func evaluate(_ e: Evidence) -> RuleResult {
        let (name, issue, next) =
            step == .tcbInfo
            ? ("TCB info", e.collateral.tcbInfo.issueDate, e.collateral.tcbInfo.nextUpdate)
            : ("QE identity", e.collateral.qeIdentity.issueDate, e.collateral.qeIdentity.nextUpdate)
        if e.now < issue {
            return .failsToMeetPolicy(
                AttestationError(
                    .collateralNotYetValid, step: step,
                    "\(name) issue date \(formatISO8601(issue)) is in the future (now \(formatISO8601(e.now)))"))
        }
        if e.now > next {
            return .failsToMeetPolicy(
                AttestationError(
                    .collateralExpired, step: step,
                    "\(name) expired: next update \(formatISO8601(next)) is before now (\(formatISO8601(e.now)))"))
        }
        return .meetsPolicy
    }
}

/// Every certificate of every chain must be within its validity period at `now`.
struct CertificateValidityRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let chains: [(VerifiedChain, AttestationError.Step, String)] = [
            (e.collateral.pckCRLIssuerChain, .crl, "PCK CRL issuer"),
            (e.collateral.tcbInfoChain, .tcbInfo, "TCB info issuer"),
            (e.collateral.qeIdentityChain, .qeIdentity, "QE identity issuer"),
            (e.pck, .pckChain, "PCK"),
        ]
        for (chain, step, name) in chains where e.now < chain.notBefore || e.now > chain.notAfter {
            return .failsToMeetPolicy(
                AttestationError(
                    .certificateExpired, step: step,
                    "a certificate of the \(name) chain is not valid at \(formatISO8601(e.now)) (chain valid \(formatISO8601(chain.notBefore)) to \(formatISO8601(chain.notAfter)))"
                ))
        }
        return .meetsPolicy
    }
}

/// The QE report must be signed by the PCK leaf key.
struct QEReportSignatureRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let data = e.quote.signatureData
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: data.qeReportSignature),
            e.cache.isValid(
                signature: signature, digest: SHA256.hash(data: data.qeReport.bytes), key: e.pck.leafKey,
                keyID: e.pck.leafKeyID)
        else {
            return .failsToMeetPolicy(
                AttestationError(
                    .invalidSignature, step: .qeReportSignature, "the QE report is not signed by the PCK key"))
        }
        return .meetsPolicy
    }
}

/// `QE report.report_data[0..32] == SHA-256(attestation key || QE auth data)`:
/// the QE vouches for the attestation key.
struct AttestationKeyBindingRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let data = e.quote.signatureData
        var hasher = SHA256()
        hasher.update(data: data.attestationKey)
        hasher.update(data: data.qeAuthData)
        let expected = Array(hasher.finalize())
        guard Array(data.qeReport.reportData.prefix(32)) == expected else {
            return .failsToMeetPolicy(
                AttestationError(
                    .mismatch, step: .attestationKeyBinding,
                    "the QE report does not bind the attestation key and QE auth data"))
        }
        return .meetsPolicy
    }
}

/// The QE must be Intel's (the header's QE vendor id) and its report must
/// match the QE identity: id `TD_QE`, MRSIGNER, ISVPRODID, masked MISCSELECT
/// and ATTRIBUTES, and an ISVSVN that some TCB level covers.
struct QEIdentityRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let identity = e.collateral.qeIdentity
        let report = e.quote.signatureData.qeReport
        func fail(_ code: AttestationError.Code, _ reason: String) -> RuleResult {
            .failsToMeetPolicy(AttestationError(code, step: .qeIdentityMatch, reason))
        }
        guard Array(e.quote.header.qeVendorID) == QuoteHeader.intelQEVendorID else {
            return fail(.mismatch, "the QE vendor id \(e.quote.header.qeVendorID.hexString) is not Intel's")
        }
        guard identity.id == "TD_QE", identity.version == 2 || identity.version == 3 else {
            return fail(.mismatch, "QE identity \(identity.id) version \(identity.version) is not a TD_QE identity")
        }
        guard Array(report.mrSigner) == identity.mrSigner else { return fail(.mismatch, "QE MRSIGNER does not match") }
        guard report.isvProdID == identity.isvProdID else {
            return fail(.mismatch, "QE ISVPRODID \(report.isvProdID) is not \(identity.isvProdID)")
        }
        guard report.miscSelect & identity.miscSelectMask == identity.miscSelect & identity.miscSelectMask else {
            return fail(.mismatch, "QE MISCSELECT does not match under the mask")
        }
        for (i, byte) in report.attributes.enumerated()
        where byte & identity.attributesMask[i] != identity.attributes[i] & identity.attributesMask[i] {
            return fail(.mismatch, "QE ATTRIBUTES do not match under the mask (byte \(i))")
        }
        guard report.attributes[report.attributes.startIndex] & 0x02 == 0 else {
            return fail(.mismatch, "the QE runs in debug mode")
        }
        if case .failure(let error) = QELevelMatch(identity: identity).level(for: report.isvSVN) {
            return .failsToMeetPolicy(error)
        }
        return .meetsPolicy
    }
}

/// The quote must be signed by the attestation key over header ‖ (v5 type
/// and size) ‖ body.
struct QuoteSignatureRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let data = e.quote.signatureData
        guard let key = try? P256.Signing.PublicKey(rawRepresentation: data.attestationKey),
            let signature = try? P256.Signing.ECDSASignature(rawRepresentation: data.signature),
            key.isValidSignature(signature, for: SHA256.hash(data: e.quote.signedBytes))
        else {
            return .failsToMeetPolicy(
                AttestationError(
                    .invalidSignature, step: .quoteSignature, "the quote is not signed by the attestation key"))
        }
        return .meetsPolicy
    }
}

private func attributeFailure(_ code: AttestationError.Code, _ e: Evidence, _ what: String) -> RuleResult {
    .failsToMeetPolicy(
        AttestationError(
            code, step: .tdAttributes,
            "\(what) (TDATTRIBUTES 0x\(String(e.quote.report.tdAttributesValue, radix: 16)))"))
}

/// TDs with any of `bits` set in TDATTRIBUTES are refused: DEBUG (bit 0),
/// the TD-under-debug profiling bits 4–6, MIGRATABLE (bit 29).
struct ForbiddenTDAttributeRule: DCAPRule {
    let bits: UInt64
    let code: AttestationError.Code
    let what: String

    static let debug = Self(bits: TDAttributes.debug, code: .debugTD, what: "the TD runs in debug mode")
    static let profiling = Self(bits: TDAttributes.profiling, code: .debugTD, what: "TD profiling is enabled")
    static let migratable = Self(bits: TDAttributes.migratable, code: .tdAttributeRefused, what: "the TD is migratable")

    func evaluate(_ e: Evidence) -> RuleResult {
        e.quote.report.tdAttributesValue & bits != 0 ? attributeFailure(code, e, what) : .meetsPolicy
    }
}

/// Every TDATTRIBUTES bit the TDX module ABI leaves reserved must be zero.
struct ReservedTDAttributesRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let reserved = e.quote.report.tdAttributesValue & ~TDAttributes.defined
        return reserved != 0
            ? attributeFailure(
                .tdAttributeRefused, e, "reserved TD attribute bits 0x\(String(reserved, radix: 16)) are set")
            : .meetsPolicy
    }
}

/// SERVTD_EXT (bit 17) only where the relying party allows service TDs
/// (never for a TD 1.0 body).
struct ServiceTDExtensionRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let allowed = e.allowServiceTD && e.quote.report.kind != .td10
        return !allowed && e.quote.report.tdAttributesValue & TDAttributes.serviceTDExtension != 0
            ? attributeFailure(.tdAttributeRefused, e, "SERVTD_EXT is set and service TDs are not allowed")
            : .meetsPolicy
    }
}

/// SEPT_VE_DISABLE (bit 28) must be set.
struct SEPTVEDisableRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        e.quote.report.tdAttributesValue & TDAttributes.septVEDisable == 0
            ? attributeFailure(.tdAttributeRefused, e, "SEPT_VE_DISABLE is not set") : .meetsPolicy
    }
}

/// A TD 1.5 body's MRSERVICETD must be all zero unless service TDs are allowed.
struct MRServiceTDRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        guard !e.allowServiceTD, let mr = e.quote.report.mrServiceTD, mr.contains(where: { $0 != 0 }) else {
            return .meetsPolicy
        }
        return .failsToMeetPolicy(
            AttestationError(
                .tdAttributeRefused, step: .tdAttributes, "MRSERVICETD is not zero and service TDs are not allowed"))
    }
}
