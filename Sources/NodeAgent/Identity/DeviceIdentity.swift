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
            throw IdentityFileError("cannot create \(directory.path)")
        }
        let rootOfTrust: SoftwareRootOfTrust
        do {
            rootOfTrust = try SoftwareRootOfTrust.create(
                keyFile: directory.appendingPathComponent("device.key").path,
                type: keyType
            )
        } catch {
            throw IdentityFileError(error.reason)
        }
        let csr = try makeCSR(platform: platform, rootOfTrust: rootOfTrust, keyType: keyType)
        do {
            try csr.serializeAsPEM().pemString.write(
                to: directory.appendingPathComponent("device.csr.pem"),
                atomically: true,
                encoding: .utf8
            )
        } catch {
            throw IdentityFileError("cannot write the CSR: \(error)")
        }
        return (rootOfTrust, csr)
    }

    /// A CSR for `platform`, signed by the root of trust's key.
    public static func makeCSR(
        platform: PlatformId,
        rootOfTrust: some RootOfTrust,
        keyType: DeviceKeyType
    ) throws(IdentityFileError) -> CertificateSigningRequest {
        do {
            return try CertificateSigningRequest(
                version: .v1,
                subject: try PlatformIdentity.subject(for: platform),
                privateKey: rootOfTrust.certificatePrivateKey,
                attributes: .init(),
                signatureAlgorithm: keyType == .ed25519 ? .ed25519 : .sha256WithRSAEncryption
            )
        } catch let error as IdentityFileError {
            throw error
        } catch {
            throw IdentityFileError("cannot make the CSR: \(error)")
        }
    }

    /// Verifies that `certificate` chains through `intermediates` to `root`
    /// at `now`, and returns the platform id it binds.
    public static func verify(
        _ certificate: Certificate,
        intermediates: [Certificate],
        root: Certificate,
        now: Date = Date()
    ) async throws(IdentityFileError) -> PlatformId {
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            RFC5280Policy(fixedExpiryValidationTime: now)
        }
        let result = await verifier.validate(leaf: certificate, intermediates: CertificateStore(intermediates))
        guard case .validCertificate = result else {
            throw IdentityFileError("the device certificate does not chain to the manufacturing root")
        }
        return try PlatformIdentity.platformId(of: certificate.subject)
    }
}
