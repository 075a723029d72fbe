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

    static func verify(_ collateral: Collateral, anchor: TrustAnchor, cache: VerificationCache) throws(AttestationError)
        -> VerifiedCollateral
    {
        let rootCRL = try RevocationList(der: collateral.rootCACRL)
        guard rootCRL.issuer == anchor.certificate.subject, rootCRL.isSigned(by: anchor.key, cache: cache) else {
            throw AttestationError(.invalidSignature, step: .crl, "the root CA CRL is not signed by the trust anchor")
        }
        guard !rootCRL.isRevoked(serial: anchor.certificate.serialNumber.bytes) else {
            throw AttestationError(.certificateRevoked, step: .crl, "the trust anchor is on its own CRL")
        }
        let pckCRLChain = try chain(
            collateral.pckCRLIssuerChain, anchor: anchor, crls: [rootCRL], cache: cache, step: .crl,
            name: "PCK CRL issuer")
        let pckCRL = try RevocationList(der: collateral.pckCRL)
        guard pckCRL.issuer == pckCRLChain.leaf.subject, pckCRL.isSigned(by: pckCRLChain.leafKey, cache: cache) else {
            throw AttestationError(.invalidSignature, step: .crl, "the PCK CRL is not signed by its issuer chain")
        }
        let crls = [rootCRL, pckCRL]

        let tcbInfoChain = try chain(
            collateral.tcbInfoIssuerChain, anchor: anchor, crls: crls, cache: cache, step: .tcbInfo,
            name: "TCB info issuer")
        try checkSignature(
            collateral.tcbInfoSignature, over: collateral.tcbInfo, key: tcbInfoChain.leafKey, step: .tcbInfo,
            what: "TCB info")
        let tcbInfo = try TCBInfo(json: collateral.tcbInfo)

        let qeIdentityChain = try chain(
            collateral.qeIdentityIssuerChain, anchor: anchor, crls: crls, cache: cache, step: .qeIdentity,
            name: "QE identity issuer")
        try checkSignature(
            collateral.qeIdentitySignature, over: collateral.qeIdentity, key: qeIdentityChain.leafKey,
            step: .qeIdentity, what: "QE identity")
        let qeIdentity = try QEIdentity(json: collateral.qeIdentity)

        return VerifiedCollateral(
            rootCRL: rootCRL, pckCRL: pckCRL, pckCRLIssuerChain: pckCRLChain, tcbInfo: tcbInfo,
            tcbInfoChain: tcbInfoChain, qeIdentity: qeIdentity, qeIdentityChain: qeIdentityChain)
    }

    private static func chain(
        _ pem: String, anchor: TrustAnchor, crls: [RevocationList], cache: VerificationCache,
        step: AttestationError.Step, name: String
    ) throws(AttestationError) -> VerifiedChain {
        let key = Digest(parts: [Array(pem.utf8)[...], anchor.digest[...]] + crls.map { $0.der[...] })
        if let known = cache.chain(key) { return known }
        let ders = try PEM.certificates(Array(pem.utf8), step: step)
        let verified = try ChainVerifier.verify(
            ders: ders, anchor: anchor, crls: crls, cache: cache, step: step, name: name)
        cache.store(verified, for: key)
        return verified
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
