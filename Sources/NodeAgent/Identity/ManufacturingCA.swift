import Crypto
import Foundation
import KeyrackCore
import SwiftASN1
import TrustQuorum
import X509
import _CryptoExtras

#if canImport(Glibc)
    import Glibc
#endif

/// The manufacturing certificate authority: a root and an intermediate that
/// issue device certificates binding a device key to a platform id.
///
/// `keyrack ca init --dir D` writes `root.pem`, `intermediate.pem` and the
/// two private keys (mode 0600). `keyrack ca sign --dir D --csr F` checks a
/// device's certificate signing request (its signature and its platform id)
/// and issues the device certificate under the intermediate.
public struct ManufacturingCA: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let root: Certificate
    public let intermediate: Certificate
    let intermediateKey: Certificate.PrivateKey

    /// Creates a new root and intermediate in `directory` (refusing to
    /// overwrite an existing CA).
    public static func create(in directory: URL, now: Date = Date()) throws(IdentityFileError) -> ManufacturingCA {
        let rootPath = directory.appendingPathComponent("root.pem")
        guard !FileManager.default.fileExists(atPath: rootPath.path) else {
            throw IdentityFileError(.exists, "\(directory.path) already holds a CA; refusing to overwrite it")
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let rootKey = Curve25519.Signing.PrivateKey()
            let intermediateKey = Curve25519.Signing.PrivateKey()
            let rootName = try DistinguishedName {
                OrganizationName("Keyrack")
                CommonName("Keyrack manufacturing root")
            }
            let intermediateName = try DistinguishedName {
                OrganizationName("Keyrack")
                CommonName("Keyrack manufacturing intermediate")
            }
            let root = try authority(
                key: rootKey, subject: rootName, issuer: rootName, issuerKey: rootKey, pathLength: 1, years: 20,
                now: now)
            let intermediate = try authority(
                key: intermediateKey, subject: intermediateName, issuer: rootName, issuerKey: rootKey, pathLength: 0,
                years: 15, now: now)
            try writeSecret(rootKey.rawRepresentation, to: directory.appendingPathComponent("root.key"))
            try writeSecret(intermediateKey.rawRepresentation, to: directory.appendingPathComponent("intermediate.key"))
            try root.serializeAsPEM().pemString.write(to: rootPath, atomically: true, encoding: .utf8)
            try intermediate.serializeAsPEM().pemString.write(
                to: directory.appendingPathComponent("intermediate.pem"),
                atomically: true,
                encoding: .utf8
            )
            return ManufacturingCA(root: root, intermediate: intermediate, intermediateKey: .init(intermediateKey))
        } catch let error as IdentityFileError {
            throw error
        } catch {
            throw IdentityFileError(.io, "cannot create the CA in \(directory.path): \(error)")
        }
    }

    /// The subjects only; the signing key is never printed.
    public var description: String {
        "ManufacturingCA(root: \(root.subject), intermediate: \(intermediate.subject), key redacted)"
    }
    public var debugDescription: String { description }

    /// A CA certificate for `key`, valid from an hour ago for `years`.
    private static func authority(
        key: Curve25519.Signing.PrivateKey,
        subject: DistinguishedName,
        issuer: DistinguishedName,
        issuerKey: Curve25519.Signing.PrivateKey,
        pathLength: Int,
        years: Double,
        now: Date
    ) throws -> Certificate {
        try Certificate(
            version: .v3,
            serialNumber: .init(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(years * 365 * 86400),
            issuer: issuer,
            subject: subject,
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: pathLength))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(issuerKey)
        )
    }

    /// Opens the CA in `directory`.
    public init(directory: URL) throws(IdentityFileError) {
        do {
            root = try Certificate(
                pemEncoded: String(contentsOf: directory.appendingPathComponent("root.pem"), encoding: .utf8))
            intermediate = try Certificate(
                pemEncoded: String(contentsOf: directory.appendingPathComponent("intermediate.pem"), encoding: .utf8)
            )
            let raw = try readSecret(directory.appendingPathComponent("intermediate.key"))
            intermediateKey = .init(try Curve25519.Signing.PrivateKey(rawRepresentation: raw))
        } catch let error as IdentityFileError {
            throw error
        } catch {
            throw IdentityFileError(.format, "\(directory.path) is not a CA made by `keyrack ca init`: \(error)")
        }
    }

    init(root: Certificate, intermediate: Certificate, intermediateKey: Certificate.PrivateKey) {
        self.root = root
        self.intermediate = intermediate
        self.intermediateKey = intermediateKey
    }

    /// Checks `csr` (its self-signature and its platform id) and issues the
    /// device certificate.
    public func sign(_ csr: CertificateSigningRequest, now: Date = Date()) throws(IdentityFileError) -> Certificate {
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw IdentityFileError(.forgedCSR, "the CSR's signature does not verify: refusing to sign")
        }
        try Self.checkDeviceKey(csr.publicKey)
        let platform = try PlatformIdentity.platformId(of: csr.subject)
        do {
            return try Certificate(
                version: .v3,
                serialNumber: .init(),
                publicKey: csr.publicKey,
                notValidBefore: now.addingTimeInterval(-3600),
                notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
                issuer: intermediate.subject,
                subject: try PlatformIdentity.subject(for: platform),
                signatureAlgorithm: .ed25519,
                extensions: try Self.deviceExtensions,
                issuerPrivateKey: intermediateKey
            )
        } catch {
            throw IdentityFileError(.issue, "cannot issue the device certificate: \(error)")
        }
    }
}

extension ManufacturingCA {
    /// The smallest RSA modulus the CA certifies.
    public static let minimumRSABits = 3072

    /// A device key the CA certifies: Ed25519 (what `keyrack node init`
    /// makes), or RSA of at least ``minimumRSABits`` bits. Anything else —
    /// ECDSA curves, short RSA — is refused (review finding L13).
    static func checkDeviceKey(_ key: Certificate.PublicKey) throws(IdentityFileError) {
        if Curve25519.Signing.PublicKey(key) != nil { return }
        if let rsa = _RSA.Signing.PublicKey(key) {
            guard rsa.keySizeInBits >= minimumRSABits else {
                throw IdentityFileError(
                    .keyType,
                    "the CSR's key is RSA-\(rsa.keySizeInBits): the CA signs RSA of \(minimumRSABits) bits or more")
            }
            return
        }
        throw IdentityFileError(.keyType, "the CSR's key is neither Ed25519 nor RSA: the CA signs only those")
    }

    /// A device certificate's extensions: an end entity (not a CA) whose key
    /// signs, for TLS client and server authentication — what
    /// ``DeviceCertificatePolicy`` requires of a peer's leaf.
    static var deviceExtensions: Certificate.Extensions {
        get throws {
            try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            }
        }
    }
}

/// How a platform id is written into certificate subjects:
/// `O=Keyrack, CN=<part>:<serial>`.
public enum PlatformIdentity {
    public static func subject(for platform: PlatformId) throws(IdentityFileError) -> DistinguishedName {
        do {
            return try DistinguishedName {
                OrganizationName("Keyrack")
                CommonName("\(platform.part):\(platform.serial)")
            }
        } catch {
            throw IdentityFileError(.issue, "cannot encode the platform id")
        }
    }

    /// The platform id a subject names; anything else is refused.
    public static func platformId(of subject: DistinguishedName) throws(IdentityFileError) -> PlatformId {
        let commonNames = subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }
        guard commonNames.count == 1, let name = String(commonNames[0].value), let id = PlatformId(parsing: name)
        else { throw IdentityFileError(.platform, "the subject does not name a platform (CN=<part>:<serial>)") }
        return id
    }
}

/// A CA, device key or certificate file that could not be made or read, or
/// a certificate that could not be issued or verified.
public typealias IdentityFileError = CodedError<IdentityFileErrorCode>

/// The codes of ``IdentityFileError``.
public struct IdentityFileErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// A CA or a device key already exists where one was to be made: it is never overwritten.
    public static let exists = IdentityFileErrorCode("NODE-IDENTITY-EXISTS")
    /// A file or directory cannot be created, written or read.
    public static let io = IdentityFileErrorCode("NODE-IDENTITY-IO")
    /// A private key file is readable by others than its owner.
    public static let permissions = IdentityFileErrorCode("NODE-IDENTITY-PERMISSIONS")
    /// A directory does not hold a CA made by `keyrack ca init`.
    public static let format = IdentityFileErrorCode("NODE-IDENTITY-FORMAT")
    /// A CSR's signature does not verify: the CA refuses to sign it.
    public static let forgedCSR = IdentityFileErrorCode("NODE-IDENTITY-FORGED-CSR")
    /// A CSR's key is of a type or size the CA does not certify.
    public static let keyType = IdentityFileErrorCode("NODE-IDENTITY-KEY-TYPE")
    /// A CSR or a certificate cannot be made.
    public static let issue = IdentityFileErrorCode("NODE-IDENTITY-ISSUE")
    /// A subject does not name a platform (`CN=<part>:<serial>`).
    public static let platform = IdentityFileErrorCode("NODE-IDENTITY-PLATFORM")
    /// A device certificate does not verify against the manufacturing root.
    public static let unverified = IdentityFileErrorCode("NODE-IDENTITY-UNVERIFIED")
}

func writeSecret(_ bytes: some DataProtocol, to url: URL) throws(IdentityFileError) {
    let descriptor = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw IdentityFileError(.io, "cannot create \(url.path): errno \(errno)") }
    defer { close(descriptor) }
    let data = Array(bytes)
    let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    guard written == data.count, fsync(descriptor) == 0 else {
        unlink(url.path)
        throw IdentityFileError(.io, "cannot write \(url.path)")
    }
}

func readSecret(_ url: URL) throws(IdentityFileError) -> [UInt8] {
    var status = stat()
    guard stat(url.path, &status) == 0 else { throw IdentityFileError(.io, "cannot read \(url.path)") }
    guard status.st_mode & 0o077 == 0 else {
        throw IdentityFileError(.permissions, "\(url.path) must be readable by its owner only")
    }
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw IdentityFileError(.io, "cannot read \(url.path)")
    }
    return Array(data)
}
