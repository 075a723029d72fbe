import Crypto
import X509

/// Timing of the parts of a cold verification, for `keyrack bench verify --breakdown`.
@_spi(Benchmark)
public enum BenchmarkParts {
    /// Named closures, each doing one part of a cold verification once.
    public static func parts(quote: [UInt8], collateral: Collateral, anchor: TrustAnchor) throws -> [(
        String, () throws -> Void
    )] {
        let collateralKey = Digest(parts: [collateral.digest.bytes[...], anchor.digest[...]])
        let verifiedCollateral = try VerifiedCollateral.verify(
            collateral, key: collateralKey, anchor: anchor, cache: VerificationCache())
        let parsed = try Quote(bytes: quote)
        let pemBytes = Array(parsed.signatureData.pckChainPEM)
        let ders = try PEM.certificates(pemBytes, step: .pckChain)
        let leaf = try Certificate(derEncoded: ders[0])
        let ca = try Certificate(derEncoded: ders[1])
        let key = try unwrap(P256.Signing.PublicKey(ca.publicKey))
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: parsed.signatureData.qeReportSignature)
        let leafKey = try unwrap(P256.Signing.PublicKey(leaf.publicKey))
        let digest = SHA256.hash(data: parsed.signatureData.qeReport.bytes)
        return [
            (
                "stage: verify collateral, cold",
                {
                    _ = try VerifiedCollateral.verify(
                        collateral, key: collateralKey, anchor: anchor, cache: VerificationCache())
                }
            ),
            (
                "stage: PCK chain decode+verify+extensions, cold",
                {
                    let chain = try ChainVerifier.decode(
                        parsed.signatureData.pckChainPEM, step: .pckChain, name: "PCK", anchor: anchor)
                    let verified = try ChainVerifier.verify(
                        chain: chain, anchor: anchor, crls: verifiedCollateral.crls, cache: VerificationCache(),
                        step: .pckChain, name: "PCK")
                    _ = try PCKExtensions(
                        derEncoded: try unwrap(verified.leaf.extensions[oid: PCKExtensions.oid]).value)
                }
            ),
            ("parse quote", { _ = try Quote(bytes: quote) }),
            ("key x963Representation", { _ = leafKey.x963Representation }),
            ("basicConstraints", { _ = try ca.extensions.basicConstraints }),
            ("DN ==", { _ = leaf.issuer == ca.subject }),
            ("SHA-256 of TCB info", { _ = SHA256.hash(data: Array(collateral.tcbInfo.utf8)) }),
            ("PEM decode PCK chain", { _ = try PEM.certificates(pemBytes, step: .pckChain) }),
            ("X509 parse 1 certificate", { _ = try Certificate(derEncoded: ders[0]) }),
            (
                "X509 cert signature check",
                { _ = Certificate.PublicKey(key).isValidSignature(leaf.signature, for: leaf) }
            ),
            ("P256 verify (digest)", { _ = leafKey.isValidSignature(signature, for: digest) }),
            ("PCK extensions", { _ = try parsed.unverifiedPCKExtensions() }),
            ("root CRL parse", { _ = try RevocationList(der: collateral.rootCACRL) }),
            ("PCK CRL parse", { _ = try RevocationList(der: collateral.pckCRL) }),
            ("TCB info JSON", { _ = try TCBInfo(json: collateral.tcbInfo) }),
            ("QE identity JSON", { _ = try QEIdentity(json: collateral.qeIdentity) }),
            (
                "collateral digest",
                {
                    _ = Collateral(
                        pckCRLIssuerChain: collateral.pckCRLIssuerChain, rootCACRL: collateral.rootCACRL,
                        pckCRL: collateral.pckCRL, tcbInfoIssuerChain: collateral.tcbInfoIssuerChain,
                        tcbInfo: collateral.tcbInfo, tcbInfoSignature: collateral.tcbInfoSignature,
                        qeIdentityIssuerChain: collateral.qeIdentityIssuerChain, qeIdentity: collateral.qeIdentity,
                        qeIdentitySignature: collateral.qeIdentitySignature)
                }
            ),
        ]
    }
}

struct MissingValue: Error {}
func unwrap<T>(_ value: T?) throws -> T {
    guard let value else { throw MissingValue() }
    return value
}
