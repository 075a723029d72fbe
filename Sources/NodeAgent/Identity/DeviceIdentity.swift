import Foundation
import SwiftASN1
import TrustQuorum
@_spi(FixedExpiryValidationTime) import X509

/// A device's identity: the root of trust's key, a CSR binding the platform
/// id, and (once the CA signed it) the device certificate.
///
/// `keyrack device init --dir D --part P --serial S` writes `D/device.key`
/// (mode 0600) and `D/device.csr.pem`; `keyrack ca sign` turns the CSR into
/// `device.pem`.
public enum DeviceIdentity {
    /// Creates the device key and its CSR in `directory`.
    public static func initialize(
        directory: URL,
        platform: PlatformId,
        keyType: DeviceKeyType = .ed25519
    ) throws(IdentityFileError) -> (rootOfTrust: SoftwareRootOfTrust, csr: CertificateSigningRequest) {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw IdentityFileError(.io, "cannot create \(directory.path)")
        }
        let rootOfTrust: SoftwareRootOfTrust
        do {
            rootOfTrust = try SoftwareRootOfTrust.create(
                keyFile: directory.appendingPathComponent("device.key").path,
                type: keyType
            )
        } catch {
            throw IdentityFileError(error.code == .exists ? .exists : .io, error.reason)
        }
        let csr = try makeCSR(platform: platform, rootOfTrust: rootOfTrust)
        do {
            try csr.serializeAsPEM().pemString.write(
                to: directory.appendingPathComponent("device.csr.pem"),
                atomically: true,
                encoding: .utf8
            )
        } catch {
            throw IdentityFileError(.io, "cannot write the CSR: \(error)")
        }
        return (rootOfTrust, csr)
    }

    /// A CSR for `platform`, signed inside the root of trust (Ed25519, or
    /// RSA PKCS#1 v1.5 SHA-256 for an RSA key: X.509 as swift-certificates
    /// writes it).
    public static func makeCSR(
        platform: PlatformId,
        rootOfTrust: some RootOfTrust
    ) throws(IdentityFileError) -> CertificateSigningRequest {
        do {
            let signer = RootOfTrustCertificateSigner(rootOfTrust)
            return try CertificateSigningRequest(
                version: .v1,
                subject: try PlatformIdentity.subject(for: platform),
                privateKey: Certificate.PrivateKey(signer),
                attributes: .init(),
                signatureAlgorithm: signer.defaultSignatureAlgorithm
            )
        } catch let error as IdentityFileError {
            throw error
        } catch {
            throw IdentityFileError(.issue, "cannot make the CSR: \(error)")
        }
    }

    /// Verifies that `certificate` chains through `intermediates` to `root`
    /// at `now` and is a device certificate, and returns the platform id it
    /// binds. See ``verifiedChain(_:intermediates:root:now:)``.
    public static func verify(
        _ certificate: Certificate,
        intermediates: [Certificate],
        root: Certificate,
        now: Date = Date()
    ) async throws(IdentityFileError) -> PlatformId {
        try await verifiedChain(certificate, intermediates: intermediates, root: root, now: now).platform
    }

    /// Verifies a device certificate with swift-certificates: it must chain
    /// through `intermediates` to `root` under the RFC 5280 policy at `now`
    /// (signatures, validity periods, CA constraints, critical extensions),
    /// be an end-entity device certificate (``DeviceCertificatePolicy``),
    /// and name a platform. Returns the platform id and the validated chain,
    /// leaf first, root last. Peers' certificates are checked here in every
    /// TLS handshake.
    public static func verifiedChain(
        _ certificate: Certificate,
        intermediates: [Certificate],
        root: Certificate,
        now: Date = Date()
    ) async throws(IdentityFileError) -> (platform: PlatformId, chain: [Certificate]) {
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            RFC5280Policy(fixedExpiryValidationTime: now)
            DeviceCertificatePolicy()
        }
        let result = await verifier.validate(leaf: certificate, intermediates: CertificateStore(intermediates))
        let chain: ValidatedCertificateChain
        switch result {
        case .validCertificate(let validated):
            chain = validated
        case .couldNotValidate(let failures):
            // Each candidate chain's reason, or none when no chain to the
            // root could be built at all.
            let reasons = Set(failures.map { $0.policyFailureReason.description }).sorted()
            throw IdentityFileError(
                .unverified,
                "the device certificate does not verify against the manufacturing root: "
                    + (reasons.isEmpty ? "it does not chain to the root" : reasons.joined(separator: "; ")))
        }
        return (try PlatformIdentity.platformId(of: certificate.subject), Array(chain))
    }
}

/// What makes a leaf a device certificate, beyond RFC 5280 (which lets a CA
/// certificate be a leaf): it is not a CA (no `cA` basic constraint), its
/// key usage is digital signatures and not certificate or CRL signing, and
/// its extended key usage allows both TLS client and server authentication
/// (every node is both). The other certificates of the chain are left to
/// `RFC5280Policy`.
public struct DeviceCertificatePolicy: VerifierPolicy {
    public let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = []

    public init() {}

    public func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        let leaf = chain.leaf
        do {
            if let constraints = try leaf.extensions.basicConstraints,
                case .isCertificateAuthority = constraints
            {
                return .failsToMeetPolicy(reason: "the leaf is a CA certificate, not a device certificate")
            }
            guard let usage = try leaf.extensions.keyUsage, usage.digitalSignature, !usage.keyCertSign,
                !usage.cRLSign
            else {
                return .failsToMeetPolicy(reason: "the leaf's key usage is not that of a device certificate")
            }
            guard let extended = try leaf.extensions.extendedKeyUsage, extended.contains(.serverAuth),
                extended.contains(.clientAuth)
            else {
                return .failsToMeetPolicy(reason: "the leaf does not allow TLS client and server authentication")
            }
            guard !extended.contains(OperatorRole.usage) else {
                return .failsToMeetPolicy(reason: "the leaf carries the operator role: it is not a device certificate")
            }
        } catch {
            return .failsToMeetPolicy(reason: "the leaf's extensions do not parse: \(error)")
        }
        return .meetsPolicy
    }
}
