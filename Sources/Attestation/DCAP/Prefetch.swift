import Crypto

/// Work on the quote's PCK chain that does not need the collateral, run as a
/// child task of a cold ``QuoteVerifier/verifyConcurrently(quote:collateral:now:)``
/// while the parent verifies the collateral: decoding the chain, and checking
/// its link signatures and the QE report signature into the signature cache.
/// It decides nothing: the sequential verification that follows repeats
/// every check, finding the signatures in the cache, so errors and their
/// order are exactly as without it.
enum PCKPrefetch {
    /// Decodes the chain and warms the cache; returns the decoded chain or why it did not decode.
    static func decodeAndWarm(
        quote: Quote, anchor: TrustAnchor, cache: VerificationCache
    ) async -> Result<[ParsedCertificate], AttestationError> {
        let result = Result { () throws(AttestationError) in
            try ChainVerifier.decode(quote.signatureData.pckChainPEM, step: .pckChain, name: "PCK", anchor: anchor)
        }
        if case .success(let chain) = result { warm(chain: chain, quote: quote, anchor: anchor, cache: cache) }
        return result
    }

    private static func warm(chain: [ParsedCertificate], quote: Quote, anchor: TrustAnchor, cache: VerificationCache) {
        for (index, link) in chain.enumerated() {
            let issuerKey: P256.Signing.PublicKey?
            let issuerID: Digest
            if index + 1 < chain.count {
                issuerKey = P256.Signing.PublicKey(chain[index + 1].certificate.publicKey)
                issuerID = chain[index + 1].id
            } else {
                issuerKey = anchor.key
                issuerID = anchor.id
            }
            guard let issuerKey, let signature = ChainVerifier.signature(ofCertificate: link.der) else { return }
            _ = cache.isValid(
                signature: signature, digest: SHA256.hash(data: link.certificate.tbsCertificateBytes), key: issuerKey,
                keyID: issuerID)
        }
        let data = quote.signatureData
        guard let leaf = chain.first, let leafKey = P256.Signing.PublicKey(leaf.certificate.publicKey),
            let signature = try? P256.Signing.ECDSASignature(rawRepresentation: data.qeReportSignature)
        else { return }
        _ = cache.isValid(
            signature: signature, digest: SHA256.hash(data: data.qeReport.bytes), key: leafKey, keyID: leaf.id)
    }
}
