import Crypto
import Foundation
import SecretSharing

#if canImport(Glibc)
    import Glibc
#endif

/// What a node's root of trust does: it signs with a device key that never
/// leaves it, and it derives the keys that seal the node's data at rest.
/// ``SoftwareRootOfTrust`` keeps the key in a file; a TPM or a hardware root
/// of trust can take its place behind this protocol.
public protocol RootOfTrust: Sendable {
    /// The device's public signing key (Ed25519, raw 32 bytes).
    var publicKey: [UInt8] { get }
    /// Signs `message` with the device key.
    func sign(_ message: [UInt8]) throws(RootOfTrustError) -> [UInt8]
    /// A 256-bit key for sealing data at rest for `purpose`; it never leaves
    /// the node, and another root of trust derives another key.
    func sealingKey(purpose: String) -> SymmetricKey
}

/// A root of trust that failed or could not be opened.
public struct RootOfTrustError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The software root of trust: an Ed25519 seed in a file of mode 0600,
/// created on first use, never exported.
public struct SoftwareRootOfTrust: RootOfTrust {
    private let signingKey: Curve25519.Signing.PrivateKey
    private let seed: SecretBytes

    /// Opens the key at `path`, creating it (mode 0600) if missing.
    public init(keyFile path: String) throws(RootOfTrustError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            guard errno == ENOENT else { throw RootOfTrustError("cannot open the device key \(path): errno \(errno)") }
            try self.init(seed: Self.create(path))
            return
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & 0o077 == 0 else {
            throw RootOfTrustError("the device key \(path) must be readable by its owner only (chmod 600)")
        }
        guard status.st_size == 32 else { throw RootOfTrustError("the device key \(path) must be 32 bytes") }
        var ok = false
        let seed = SecretBytes(count: 32) { ok = read(descriptor, $0.baseAddress, 32) == 32 }
        guard ok else { throw RootOfTrustError("cannot read the device key \(path)") }
        try self.init(seed: seed)
    }

    /// A root of trust from a seed (tests).
    public init(seed: SecretBytes) throws(RootOfTrustError) {
        guard seed.count == 32,
            let key = seed.withUnsafeBytes({ try? Curve25519.Signing.PrivateKey(rawRepresentation: $0) })
        else { throw RootOfTrustError("a device seed is 32 bytes") }
        signingKey = key
        self.seed = seed
    }

    public var publicKey: [UInt8] { Array(signingKey.publicKey.rawRepresentation) }

    public func sign(_ message: [UInt8]) throws(RootOfTrustError) -> [UInt8] {
        do {
            return Array(try signingKey.signature(for: message))
        } catch {
            throw RootOfTrustError("signing failed")
        }
    }

    public func sealingKey(purpose: String) -> SymmetricKey {
        seed.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: bytes),
                salt: Array("keyrack-rot-v1".utf8),
                info: Array(purpose.utf8),
                outputByteCount: 32
            )
        }
    }

    private static func create(_ path: String) throws(RootOfTrustError) -> SecretBytes {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw RootOfTrustError("cannot create the device key \(path): errno \(errno)") }
        defer { close(descriptor) }
        var random = SystemRandomSource()
        let seed = random.secretBytes(32)
        let written = seed.withUnsafeBytes { write(descriptor, $0.baseAddress, 32) }
        guard written == 32, fsync(descriptor) == 0 else {
            unlink(path)
            throw RootOfTrustError("cannot write the device key \(path)")
        }
        return seed
    }
}
