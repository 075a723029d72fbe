import Crypto
import KeyrackCore
import X509

/// The root a quote's certificate chains must lead to: Intel's SGX root CA in
/// production, the software TEE's test root in tests and demos.
public struct TrustAnchor: Sendable, Hashable {
    /// The root certificate, DER.
    public let der: [UInt8]
    /// The parsed certificate.
    public let certificate: Certificate
    /// Its P-256 key.
    public let key: P256.Signing.PublicKey
    /// SHA-256 of der: part of every cache key, so results verified under
    /// one anchor are never reused under another.
    public let digest: [UInt8]
    /// ``digest`` as a cache key part.
    let id: Digest

    /// Reads a root certificate, DER or PEM.
    public init(bytes: [UInt8]) throws(AttestationError) {
        var der = bytes
        if bytes.first != 0x30 {
            der = try PEM.certificates(bytes, step: .pckChain)[0]
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw AttestationError(.decodingFailed, step: .pckChain, "the trust anchor is not a certificate")
        }
        guard let key = P256.Signing.PublicKey(certificate.publicKey) else {
            throw AttestationError(.unsupported, step: .pckChain, "the trust anchor's key is not ECDSA P-256")
        }
        self.der = der
        self.certificate = certificate
        self.key = key
        let hash = SHA256.hash(data: der)
        self.digest = Array(hash)
        self.id = Digest(hash)
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.digest == rhs.digest }
    public func hash(into hasher: inout Hasher) { hasher.combine(digest) }

    /// Intel's SGX Root CA (valid 2018–2049), the default trust anchor.
    public static let intelSGXRootCA: TrustAnchor = {
        // A constant that is known to parse; a failure here is a build defect.
        guard let bytes = [UInt8](hex: intelSGXRootCAHex), let anchor = try? TrustAnchor(bytes: bytes) else {
            fatalError("the built-in Intel SGX root CA does not parse")
        }
        return anchor
    }()
}

private let intelSGXRootCAHex =
    "3082028f30820234a003020102021422650cd65a9d3489f383b49552bf501b392706ac300a06082a8648ce3d0403023068311a301806035504030c11496e74656c2053475820526f6f74204341311a3018060355040a0c11496e74656c20436f72706f726174696f6e3114301206035504070c0b53616e746120436c617261310b300906035504080c024341310b3009060355040613025553301e170d3138303532313130343531305a170d3439313233313233353935395a3068311a301806035504030c11496e74656c2053475820526f6f74204341311a3018060355040a0c11496e74656c20436f72706f726174696f6e3114301206035504070c0b53616e746120436c617261310b300906035504080c024341310b30090603550406130255533059301306072a8648ce3d020106082a8648ce3d030107034200040ba9c4c0c0c86193a3fe23d6b02cda10a8bbd4e88e48b4458561a36e705525f567918e2edc88e40d860bd0cc4ee26aacc988e505a953558c453f6b0904ae7394a381bb3081b8301f0603551d2304183016801422650cd65a9d3489f383b49552bf501b392706ac30520603551d1f044b30493047a045a043864168747470733a2f2f6365727469666963617465732e7472757374656473657276696365732e696e74656c2e636f6d2f496e74656c534758526f6f7443412e646572301d0603551d0e0416041422650cd65a9d3489f383b49552bf501b392706ac300e0603551d0f0101ff04040302010630120603551d130101ff040830060101ff020101300a06082a8648ce3d0403020349003046022100e5bfe50911f92f428920dc368a302ee3d12ec5867ff622ec6497f78060c13c20022100e09d25ac7a0cb3e5e8e68fec5fa3bd416c47440bd950639d450edcbea4576aa2"
