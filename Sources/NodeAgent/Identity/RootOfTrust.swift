import Crypto
import Foundation
import SecretSharing
import X509
import _CryptoExtras

#if canImport(Glibc)
    import Glibc
#endif

/// What a node's root of trust does: it signs with a device key that never
/// leaves it, and it derives the keys that seal the node's data at rest.
/// ``SoftwareRootOfTrust`` keeps the key in a file; a TPM or a hardware root
/// of trust can take its place behind this protocol.
public protocol RootOfTrust: Sendable {
    /// The device key as swift-certificates needs it to sign a CSR or a TLS
    /// handshake.
    var certificatePrivateKey: Certificate.PrivateKey { get }
    /// Signs `message` with the device key (Ed25519, or RSA-PSS SHA-256).
    func sign(_ message: [UInt8]) throws(RootOfTrustError) -> [UInt8]
    /// A 256-bit key for sealing data at rest for `purpose`; it never leaves
    /// the node, and another root of trust derives another key.
    func sealingKey(purpose: String) -> SymmetricKey
    /// The node's measurement evidence: a signature by the device key over
    /// `log` bound to `reportData` (what a peer's attestation asks for). A
    /// TPM would answer with a quote over its PCRs instead.
    func signMeasurements(_ log: MeasurementLog, reportData: [UInt8]) throws(RootOfTrustError) -> [UInt8]
}

extension RootOfTrust {
    /// Signs the domain-separated encoding of the report data and the log
    /// (as evidence frames carry them) with ``sign(_:)``.
    public func signMeasurements(_ log: MeasurementLog, reportData: [UInt8]) throws(RootOfTrustError) -> [UInt8] {
        try sign(SoftwareEvidence.signedMessage(reportData: reportData, log: log))
    }

    /// The device's public key.
    public var publicKey: Certificate.PublicKey { certificatePrivateKey.publicKey }
}

/// A root of trust that failed or could not be opened.
public struct RootOfTrustError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The kinds of device key.
public enum DeviceKeyType: String, Sendable, CaseIterable {
    /// Ed25519 (the default).
    case ed25519
    /// RSA-4096, as the manufacturing flow of the seed document uses.
    case rsa4096
}

/// The software root of trust: the device key in a file of mode 0600 —
/// 32 raw bytes for an Ed25519 seed, PEM for RSA — never exported.
public struct SoftwareRootOfTrust: RootOfTrust, CustomStringConvertible, CustomDebugStringConvertible {
    private enum Key: Sendable {
        case ed25519(Curve25519.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
    }

    private let key: Key
    /// The key material the sealing keys are derived from.
    private let material: SecretBytes

    /// Creates a new device key at `path` (never overwriting one).
    public static func create(keyFile path: String, type: DeviceKeyType = .ed25519) throws(RootOfTrustError)
        -> SoftwareRootOfTrust
    {
        let bytes: SecretBytes
        switch type {
        case .ed25519:
            var random = SystemRandomSource()
            bytes = random.secretBytes(32)
        case .rsa4096:
            do {
                bytes = SecretBytes(Array(try _RSA.Signing.PrivateKey(keySize: .bits4096).pemRepresentation.utf8))
            } catch {
                throw RootOfTrustError("cannot generate an RSA-4096 key")
            }
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw RootOfTrustError(
                errno == EEXIST
                    ? "\(path) already exists; refusing to overwrite a device key"
                    : "cannot create \(path): errno \(errno)"
            )
        }
        defer { close(descriptor) }
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            unlink(path)
            throw RootOfTrustError("cannot write \(path)")
        }
        return try SoftwareRootOfTrust(material: bytes)
    }

    /// Opens the device key at `path`.
    public init(keyFile path: String) throws(RootOfTrustError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw RootOfTrustError(
                errno == ENOENT
                    ? "no device key at \(path): run `keyrack device init`" : "cannot open \(path): errno \(errno)"
            )
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & 0o077 == 0 else {
            throw RootOfTrustError("the device key \(path) must be readable by its owner only (chmod 600)")
        }
        let size = Int(status.st_size)
        guard size > 0, size <= 16_384 else { throw RootOfTrustError("\(path) is not a device key") }
        var ok = false
        let bytes = SecretBytes(count: size) { ok = read(descriptor, $0.baseAddress, size) == size }
        guard ok else { throw RootOfTrustError("cannot read \(path)") }
        try self.init(material: bytes)
    }

    /// A root of trust over an Ed25519 seed (tests).
    public init(seed: SecretBytes) throws(RootOfTrustError) {
        guard seed.count == 32 else { throw RootOfTrustError("a device seed is 32 bytes") }
        try self.init(material: seed)
    }

    private init(material: SecretBytes) throws(RootOfTrustError) {
        if material.count == 32 {
            guard let key = material.withUnsafeBytes({ try? Curve25519.Signing.PrivateKey(rawRepresentation: $0) })
            else {
                throw RootOfTrustError("the Ed25519 device seed is invalid")
            }
            self.key = .ed25519(key)
        } else {
            let pem = material.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            guard let key = try? _RSA.Signing.PrivateKey(pemRepresentation: pem), key.keySizeInBits >= 2048 else {
                throw RootOfTrustError("the device key is neither an Ed25519 seed nor an RSA private key in PEM")
            }
            self.key = .rsa(key)
        }
        self.material = material
    }

    /// The key type only; the key is never printed.
    public var description: String {
        switch key {
        case .ed25519: return "SoftwareRootOfTrust(Ed25519, key redacted)"
        case .rsa: return "SoftwareRootOfTrust(RSA, key redacted)"
        }
    }
    public var debugDescription: String { description }

    public var certificatePrivateKey: Certificate.PrivateKey {
        switch key {
        case .ed25519(let key): return .init(key)
        case .rsa(let key): return .init(key)
        }
    }

    public func sign(_ message: [UInt8]) throws(RootOfTrustError) -> [UInt8] {
        do {
            switch key {
            case .ed25519(let key): return Array(try key.signature(for: message))
            case .rsa(let key): return Array(try key.signature(for: message, padding: .PSS).rawRepresentation)
            }
        } catch {
            throw RootOfTrustError("signing failed")
        }
    }

    public func sealingKey(purpose: String) -> SymmetricKey {
        material.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: bytes),
                salt: Array("keyrack-rot-v1".utf8),
                info: Array(purpose.utf8),
                outputByteCount: 32
            )
        }
    }
}
