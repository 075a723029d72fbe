import Crypto
import X509

/// A quote that passed DCAP verification, with what a relying party decides on.
public struct VerifiedQuote: Sendable {
    /// The quote.
    public let quote: Quote
    /// The TCB status and advisories.
    public let tcb: TCBVerdict
    /// The platform's PCK certificate extensions (FMSPC, TCB components, PCESVN, PCE-ID, PPID).
    public let platform: PCKExtensions

    /// The TD report body: MRTD, RTMR0–3, report data and the rest.
    public var report: TDReport { quote.report }
    /// The combined TCB status.
    public var status: TCBStatus { tcb.status }
    /// Intel security advisories that apply.
    public var advisoryIDs: [String] { tcb.advisoryIDs }
}

/// Verifies TDX quotes with Intel DCAP: the PCK chain with CRLs, the signed
/// TCB info and QE identity, the QE report and its binding of the
/// attestation key, the quote signature, and the TCB status.
///
/// The trust anchor and `now` are parameters; verified intermediate results
/// live in a ``VerificationCache`` (shared by copies of the verifier), so
/// the same platform and collateral are checked once.
///
/// ```swift
/// let verifier = QuoteVerifier()                          // Intel's SGX root CA
/// let collateral = try Collateral(json: collateralData)
/// let verified = try verifier.verify(quote: quoteBytes, collateral: collateral, now: now)
/// verified.report.reportData; verified.report.mrTD; verified.status
/// ```
public struct QuoteVerifier: Sendable {
    /// The root every chain must lead to.
    public let trustAnchor: TrustAnchor
    /// Verified intermediate results.
    public let cache: VerificationCache
    /// Whether TDs with service TDs are accepted: SERVTD_EXT set (TD 1.5
    /// bodies only) and a non-zero MRSERVICETD. Off by default.
    public let allowServiceTD: Bool

    /// A verifier under `trustAnchor` (Intel's SGX root CA by default),
    /// keeping what it verified in `cache`.
    public init(
        trustAnchor: TrustAnchor = .intelSGXRootCA, cache: VerificationCache = VerificationCache(),
        allowServiceTD: Bool = false
    ) {
        self.trustAnchor = trustAnchor
        self.cache = cache
        self.allowServiceTD = allowServiceTD
    }

    /// Parses and verifies `quote` at `now` (Unix seconds).
    /// - Throws: ``AttestationError`` naming the step that failed.
    public func verify(quote: [UInt8], collateral: Collateral, now: Int64) throws(AttestationError) -> VerifiedQuote {
        try verify(quote: try Quote(bytes: quote), collateral: collateral, now: now)
    }

    /// Verifies a parsed `quote` at `now` (Unix seconds).
    ///
    /// Order: collateral signatures and chains; the PCK chain with CRLs;
    /// CRL next-update; TCB info and QE identity dates; CRL this-update;
    /// certificate validity; QE report signature; attestation key binding;
    /// QE identity; quote signature; TCB info kind, FMSPC, PCE-ID, TDX
    /// module; TCB status (with `Revoked` refused); MRSERVICETD and TD
    /// attributes.
    /// - Throws: ``AttestationError`` naming the step that failed.
    public func verify(quote: Quote, collateral: Collateral, now: Int64) throws(AttestationError) -> VerifiedQuote {
        let collateralKey = Self.collateralKey(collateral, trustAnchor)
        let verifiedCollateral: VerifiedCollateral
        if let known = cache.collateral(collateralKey) {
            verifiedCollateral = known
        } else {
            verifiedCollateral = try VerifiedCollateral.verify(
                collateral, key: collateralKey, anchor: trustAnchor, cache: cache)
            cache.store(verifiedCollateral, for: collateralKey)
        }
        return try finish(
            quote, collateralKey: collateralKey, collateral: verifiedCollateral, decoded: nil, now: now)
    }

    /// Verifies `quote` exactly as the sequential `verify(quote:collateral:now:)`
    /// does, using a second core when the cache is cold: a child task
    /// decodes the quote's PCK chain and checks its link signatures and the
    /// QE report signature into the signature cache while this task
    /// verifies the collateral. The child decides nothing — the sequential
    /// steps that follow repeat every check and find the signatures in the
    /// cache — so verdicts, failing steps and their order are the same.
    /// A warm verification runs in this task only.
    ///
    /// It shortens a cold verification when a core is idle and lengthens it
    /// when both are busy (`keyrack bench verify --parallel` measures it),
    /// which is why the KMS and the node call the sequential method.
    /// - Throws: ``AttestationError`` naming the step that failed.
    public func verifyConcurrently(
        quote: Quote, collateral: Collateral, now: Int64
    ) async throws(AttestationError) -> VerifiedQuote {
        let collateralKey = Self.collateralKey(collateral, trustAnchor)
        if cache.collateral(collateralKey) != nil { return try verify(quote: quote, collateral: collateral, now: now) }
        async let warmed = PCKPrefetch.decodeAndWarm(quote: quote, anchor: trustAnchor, cache: cache)
        let verifiedCollateral: VerifiedCollateral
        do {
            verifiedCollateral = try VerifiedCollateral.verify(
                collateral, key: collateralKey, anchor: trustAnchor, cache: cache)
        } catch {
            _ = await warmed
            throw error
        }
        cache.store(verifiedCollateral, for: collateralKey)
        return try finish(
            quote, collateralKey: collateralKey, collateral: verifiedCollateral, decoded: await warmed, now: now)
    }

    private static func collateralKey(_ collateral: Collateral, _ anchor: TrustAnchor) -> Digest {
        Digest(parts: [collateral.digest.bytes[...], anchor.digest[...]])
    }

    /// The steps after the collateral: the PCK chain, then every rule in order.
    private func finish(
        _ quote: Quote, collateralKey: Digest, collateral verifiedCollateral: VerifiedCollateral,
        decoded: Result<[ParsedCertificate], AttestationError>?, now: Int64
    ) throws(AttestationError) -> VerifiedQuote {
        let pck = try pckChain(quote, collateralKey: collateralKey, collateral: verifiedCollateral, decoded: decoded)
        guard let extensions = pck.pckExtensions else {
            throw AttestationError(.decodingFailed, step: .pckChain, "the PCK certificate has no SGX extension")
        }
        let evidence = Evidence(
            quote: quote, collateral: verifiedCollateral, pck: pck, pckExtensions: extensions, now: now, cache: cache,
            allowServiceTD: allowServiceTD)
        var verdict: TCBVerdict?
        for step in Self.steps {
            switch step {
            case .rule(let rule):
                if case .failsToMeetPolicy(let error) = rule.evaluate(evidence) { throw error }
            case .tcbStatus(let rule):
                verdict = try rule.evaluate(evidence)
            }
        }
        guard let verdict else {
            throw AttestationError(.noMatchingTCBLevel, step: .tcbStatus, "the rule list has no TCB status step")
        }
        return VerifiedQuote(quote: quote, tcb: verdict, platform: extensions)
    }

    /// A step of verification: a rule that passes or refuses, or the TCB
    /// status rule, which also yields the verdict the later rules follow.
    enum Step: Sendable {
        case rule(any DCAPRule)
        case tcbStatus(TCBStatusRule)
    }

    /// Every rule, in dcap-qvl 0.7.0's order: the collateral, signature and
    /// identity rules, the TCB status, then the TD's own attributes.
    static let steps: [Step] = rules.map(Step.rule) + [.tcbStatus(TCBStatusRule())] + tdRules.map(Step.rule)

    private static let rules: [any DCAPRule] = [
        CRLFreshnessRule(),
        CollateralDatesRule(step: .tcbInfo),
        CollateralDatesRule(step: .qeIdentity),
        CRLFreshnessRule(checkThisUpdate: true),
        CertificateValidityRule(),
        QEReportSignatureRule(),
        AttestationKeyBindingRule(),
        QEIdentityRule(),
        QuoteSignatureRule(),
        TCBInfoKindRule(),
        PlatformIdentityRule.fmspc,
        PlatformIdentityRule.pceID,
        TDXModuleRequiredRule(),
        TDXModuleSignerRule(),
    ]

    /// After the TCB status, in dcap-qvl 0.7.0's order.
    private static let tdRules: [any DCAPRule] = [
        MRServiceTDRule(),
        ForbiddenTDAttributeRule.debug,
        ForbiddenTDAttributeRule.profiling,
        ReservedTDAttributesRule(),
        ForbiddenTDAttributeRule.migratable,
        ServiceTDExtensionRule(),
        SEPTVEDisableRule(),
    ]

    private func pckChain(
        _ quote: Quote, collateralKey: Digest, collateral: VerifiedCollateral,
        decoded: Result<[ParsedCertificate], AttestationError>?
    ) throws(AttestationError) -> VerifiedChain {
        let pem = quote.signatureData.pckChainPEM
        let key = Digest(parts: [pem, collateralKey.bytes[...]])
        if let known = cache.chain(key) { return known }
        let parsed: [ParsedCertificate]
        if case .success(let chain) = decoded {
            parsed = chain
        } else {
            parsed = try ChainVerifier.decode(pem, step: .pckChain, name: "PCK", anchor: trustAnchor)
        }
        let chain = try ChainVerifier.verify(
            chain: parsed, anchor: trustAnchor, crls: collateral.crls, cache: cache, step: .pckChain, name: "PCK")
        guard let ext = chain.leaf.extensions[oid: PCKExtensions.oid] else {
            throw AttestationError(.decodingFailed, step: .pckChain, "the PCK certificate has no SGX extension")
        }
        let verified = VerifiedChain(
            leaf: chain.leaf, leafKey: chain.leafKey, leafKeyID: chain.leafKeyID, length: chain.length,
            notBefore: chain.notBefore,
            notAfter: chain.notAfter,
            pckExtensions: try PCKExtensions(derEncoded: ext.value))
        cache.store(verified, for: key)
        return verified
    }
}
