import Crypto
import SwiftASN1
import X509

/// A certificate with its DER.
struct ParsedCertificate: Sendable {
    let der: [UInt8]
    let certificate: Certificate
    /// SHA-256 of ``der``: identifies the certificate and its key in the cache.
    let id: Digest

    init(der: [UInt8], certificate: Certificate) {
        self.der = der
        self.certificate = certificate
        self.id = Digest(SHA256.hash(data: der))
    }
}

/// A certificate chain that was checked, time aside, up to the trust anchor.
struct VerifiedChain: Sendable {
    /// The leaf certificate.
    let leaf: Certificate
    /// The leaf's key.
    let leafKey: P256.Signing.PublicKey
    /// Identifies the leaf key in the signature cache.
    let leafKeyID: Digest
    /// How many certificates the chain holds below the trust anchor.
    let length: Int
    /// The latest `notBefore` and the earliest `notAfter` over the chain and
    /// the anchor, Unix seconds: the chain is valid at `now` iff
    /// `notBefore ≤ now ≤ notAfter`.
    let notBefore: Int64
    let notAfter: Int64
    /// The SGX extensions of the leaf, for PCK chains.
    let pckExtensions: PCKExtensions?
}

/// Checks a chain given leaf first: each certificate's issuer name is the next
/// one's subject and its signature verifies under the next one's key; each
/// issuer is a CA; the last certificate is the anchor itself (byte for byte)
/// or issued by it; no certificate is on its issuer's CRL, and every issuer
/// has supplied a CRL signed with its key.
enum ChainVerifier {
    /// Decodes a PEM chain into DER and certificates.
    /// A last certificate equal to `anchor` is dropped unparsed: the chain ends at the anchor.
    static func decode(
        _ pem: some Collection<UInt8>, step: AttestationError.Step, name: String, anchor: TrustAnchor? = nil
    ) throws(AttestationError) -> [ParsedCertificate] {
        var ders = try PEM.certificates(pem, step: step)
        if let anchor, ders.count > 1, ders.last == anchor.der { ders.removeLast() }
        var parsed: [ParsedCertificate] = []
        for (index, der) in ders.enumerated() {
            do {
                parsed.append(ParsedCertificate(der: der, certificate: try Certificate(derEncoded: der)))
            } catch {
                throw AttestationError(
                    .decodingFailed, step: step, "certificate \(index) of the \(name) chain does not parse")
            }
        }
        return parsed
    }

    static func verify(
        chain: [ParsedCertificate], anchor: TrustAnchor, crls: [RevocationList], cache: VerificationCache,
        step: AttestationError.Step, name: String
    ) throws(AttestationError) -> VerifiedChain {
        var chain = chain
        if chain.count > 1, chain.last?.der == anchor.der { chain.removeLast() }
        // The anchor ends a chain; it is never the leaf or an intermediate.
        guard !chain.contains(where: { $0.der == anchor.der }) else {
            throw AttestationError(
                .untrustedChain, step: step, "the \(name) chain holds no certificate below the trust anchor")
        }
        let certificates = chain.map(\.certificate)
        let ders = chain.map(\.der)
        let keyIDs = chain.dropFirst().map(\.id) + [anchor.id]
        var notBefore = Int64(anchor.certificate.notValidBefore.timeIntervalSince1970)
        var notAfter = Int64(anchor.certificate.notValidAfter.timeIntervalSince1970)
        for (index, certificate) in certificates.enumerated() {
            let issuer = index + 1 < certificates.count ? certificates[index + 1] : anchor.certificate
            let what = "certificate \(index) of the \(name) chain"
            guard certificate.issuer == issuer.subject else {
                throw AttestationError(
                    .untrustedChain, step: step,
                    index + 1 < certificates.count
                        ? "\(what) is not issued by the next certificate"
                        : "\(what) is not issued by the trust anchor")
            }
            guard let issuerKey = index + 1 < certificates.count ? P256.Signing.PublicKey(issuer.publicKey) : anchor.key
            else {
                throw AttestationError(.unsupported, step: step, "the issuer of \(what) does not have a P-256 key")
            }
            guard case .some(.isCertificateAuthority(let maxPathLength)) = try? issuer.extensions.basicConstraints
            else {
                throw AttestationError(.untrustedChain, step: step, "the issuer of \(what) is not a CA")
            }
            guard certificate.signatureAlgorithm == .ecdsaWithSHA256,
                let signature = Self.signature(ofCertificate: ders[index]),
                cache.isValid(
                    signature: signature, digest: SHA256.hash(data: certificate.tbsCertificateBytes), key: issuerKey,
                    keyID: keyIDs[index])
            else {
                throw AttestationError(.invalidSignature, step: step, "the signature on \(what) does not verify")
            }
            // The CA certificates between this issuer and the leaf.
            if let maxPathLength, index > maxPathLength {
                throw AttestationError(
                    .untrustedChain, step: step,
                    "the issuer of \(what) allows \(maxPathLength) CA certificates below it, the chain has \(index)")
            }
            guard case .some(.some(let usage)) = try? issuer.extensions.keyUsage, usage.keyCertSign else {
                throw AttestationError(
                    .untrustedChain, step: step, "the issuer of \(what) may not sign certificates (no keyCertSign)")
            }
            notBefore = max(notBefore, Int64(certificate.notValidBefore.timeIntervalSince1970))
            notAfter = min(notAfter, Int64(certificate.notValidAfter.timeIntervalSince1970))
        }
        // Revocation, once every link is known to be sound.
        for (index, certificate) in certificates.enumerated() {
            let what = "certificate \(index) of the \(name) chain"
            let issuerKey =
                index + 1 < certificates.count
                ? P256.Signing.PublicKey(certificates[index + 1].publicKey) ?? anchor.key : anchor.key
            guard let crl = crls.first(where: { $0.issuer == certificate.issuer }) else {
                throw AttestationError(.crlMissing, step: step, "no CRL from the issuer of \(what)")
            }
            guard crl.isSigned(by: issuerKey, keyID: keyIDs[index], cache: cache) else {
                throw AttestationError(
                    .crlMissing, step: step,
                    "no CRL signed by the issuer of \(what) (one from another key has its name)")
            }
            guard !crl.isRevoked(serial: certificate.serialNumber.bytes) else {
                throw AttestationError(.certificateRevoked, step: step, "\(what) is revoked")
            }
        }
        guard let leafKey = P256.Signing.PublicKey(certificates[0].publicKey) else {
            throw AttestationError(.unsupported, step: step, "the \(name) leaf does not have a P-256 key")
        }
        return VerifiedChain(
            leaf: certificates[0], leafKey: leafKey, leafKeyID: chain[0].id, length: chain.count,
            notBefore: notBefore, notAfter: notAfter,
            pckExtensions: nil)
    }

    /// The ECDSA signature of a DER certificate (its third field), found by
    /// skipping the first two fields' TLVs (the certificate was already
    /// parsed, so its structure is known to be sound).
    static func signature(ofCertificate der: [UInt8]) -> P256.Signing.ECDSASignature? {
        var index = 0
        func header() -> (tag: UInt8, length: Int)? {
            guard index + 2 <= der.count else { return nil }
            let tag = der[index]
            var length = Int(der[index + 1])
            index += 2
            if length & 0x80 != 0 {
                let count = length & 0x7F
                guard count >= 1, count <= 3, index + count <= der.count else { return nil }
                length = 0
                for _ in 0..<count {
                    length = length << 8 | Int(der[index])
                    index += 1
                }
            }
            guard length <= der.count - index else { return nil }
            return (tag, length)
        }
        guard let outer = header(), outer.tag == 0x30 else { return nil }
        for _ in 0..<2 {
            guard let field = header() else { return nil }
            index += field.length
        }
        // BIT STRING: a zero unused-bits byte, then the DER ECDSA-Sig-Value.
        guard let bits = header(), bits.tag == 0x03, bits.length >= 1, der[index] == 0 else { return nil }
        return try? P256.Signing.ECDSASignature(derRepresentation: der[(index + 1)..<(index + bits.length)])
    }
}
