import Crypto
import X509

/// Collateral whose signatures and chains were checked (time aside) under a
/// trust anchor: what ``VerificationCache`` keeps per collateral content.
struct VerifiedCollateral: Sendable {
    let rootCRL: RevocationList
    let pckCRL: RevocationList
    let pckCRLIssuerChain: VerifiedChain
    let tcbInfo: TCBInfo
    let tcbInfoChain: VerifiedChain
    let qeIdentity: QEIdentity
    let qeIdentityChain: VerifiedChain

    var crls: [RevocationList] { [rootCRL, pckCRL] }

    static func verify(
        _ collateral: Collateral, key collateralKey: Digest, anchor: TrustAnchor, cache: VerificationCache
    ) throws(AttestationError) -> VerifiedCollateral {
        let decoded = collateral.decoded
        let rootCRL = try decoded.rootCACRL.get()
        guard rootCRL.issuer == anchor.certificate.subject,
            rootCRL.isSigned(by: anchor.key, keyID: anchor.id, cache: cache)
        else {
            throw AttestationError(.invalidSignature, step: .crl, "the root CA CRL is not signed by the trust anchor")
        }
        guard !rootCRL.isRevoked(serial: anchor.certificate.serialNumber.bytes) else {
            throw AttestationError(.certificateRevoked, step: .crl, "the trust anchor is on its own CRL")
        }
        let pckCRLChain = try chain(
            collateralKey, decoded.pckCRLIssuerChain, anchor: anchor, crls: [rootCRL], cache: cache,
            step: .crl, name: "PCK CRL issuer")
        let pckCRL = try decoded.pckCRL.get()
        guard pckCRL.issuer == pckCRLChain.leaf.subject,
            pckCRL.isSigned(by: pckCRLChain.leafKey, keyID: pckCRLChain.leafKeyID, cache: cache)
        else {
            throw AttestationError(.invalidSignature, step: .crl, "the PCK CRL is not signed by its issuer chain")
        }
        let crls = [rootCRL, pckCRL]

        let tcbInfoChain = try chain(
            collateralKey, decoded.tcbInfoIssuerChain, anchor: anchor, crls: crls, cache: cache,
            step: .tcbInfo, name: "TCB info issuer")
        try checkSigner(tcbInfoChain, step: .tcbInfo, what: "TCB info")
        try checkSignature(
            collateral.tcbInfoSignature, over: collateral.tcbInfo, key: tcbInfoChain.leafKey, step: .tcbInfo,
            what: "TCB info")
        let tcbInfo = try decoded.tcbInfo.get()

        let qeIdentityChain = try chain(
            collateralKey, decoded.qeIdentityIssuerChain, anchor: anchor, crls: crls, cache: cache,
            step: .qeIdentity, name: "QE identity issuer")
        try checkSigner(qeIdentityChain, step: .qeIdentity, what: "QE identity")
        try checkSignature(
            collateral.qeIdentitySignature, over: collateral.qeIdentity, key: qeIdentityChain.leafKey,
            step: .qeIdentity, what: "QE identity")
        let qeIdentity = try decoded.qeIdentity.get()

        return VerifiedCollateral(
            rootCRL: rootCRL, pckCRL: pckCRL, pckCRLIssuerChain: pckCRLChain, tcbInfo: tcbInfo,
            tcbInfoChain: tcbInfoChain, qeIdentity: qeIdentity, qeIdentityChain: qeIdentityChain)
    }

    private static func chain(
        _ collateralKey: Digest, _ decoded: Result<[ParsedCertificate], AttestationError>, anchor: TrustAnchor,
        crls: [RevocationList], cache: VerificationCache, step: AttestationError.Step, name: String
    ) throws(AttestationError) -> VerifiedChain {
        // The chain's text and the CRLs are part of the collateral: its digest and the chain's name
        // identify the result (signatures are also cached individually, across documents).
        let key = Digest(parts: [collateralKey.bytes[...], Array(name.utf8)[...]])
        if let known = cache.chain(key) { return known }
        // Decoding errors belong to this step even if the text is shared with another chain.
        let parsed: [ParsedCertificate]
        switch decoded {
        case .success(let value): parsed = value
        case .failure(let error): throw AttestationError(error.code, step: step, error.reason)
        }
        let verified = try ChainVerifier.verify(
            chain: parsed, anchor: anchor, crls: crls, cache: cache, step: step, name: name)
        cache.store(verified, for: key)
        return verified
    }

    /// TCB info and QE identity are signed by a TCB signing certificate: an
    /// end entity issued by the trust anchor itself. A PCK CA (a CA) or a PCK
    /// certificate (two levels down) chains to the same root but must never
    /// be able to vouch for a platform's TCB.
    private static func checkSigner(_ chain: VerifiedChain, step: AttestationError.Step, what: String)
        throws(AttestationError)
    {
        let isCA: Bool
        if case .some(.isCertificateAuthority) = try? chain.leaf.extensions.basicConstraints {
            isCA = true
        } else {
            isCA = false
        }
        guard chain.length == 1, !isCA else {
            throw AttestationError(
                .untrustedChain, step: step,
                "the \(what) signer is not a TCB signing certificate (an end entity issued by the trust anchor)")
        }
    }

    private static func checkSignature(
        _ signature: [UInt8], over json: String, key: P256.Signing.PublicKey, step: AttestationError.Step,
        what: String
    ) throws(AttestationError) {
        guard let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature),
            key.isValidSignature(parsed, for: SHA256.hash(data: Array(json.utf8)))
        else {
            throw AttestationError(.invalidSignature, step: step, "the \(what) signature does not verify")
        }
    }
}
