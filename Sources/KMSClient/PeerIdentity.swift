import Crypto
import Foundation
import KeyRelease
import KeyrackCore

#if canImport(Glibc)
    import Glibc
#endif

/// A node's libp2p identity: an Ed25519 key pair kept in a file (mode 0600)
/// in libp2p's protobuf `PrivateKey` form: `08 01 12 40` followed by the
/// 32-byte seed and the 32-byte public key.
public struct PeerIdentity: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    let privateKey: Curve25519.Signing.PrivateKey
    /// The peer id.
    public let peerId: PeerID

    /// An identity from a private key.
    public init(privateKey: Curve25519.Signing.PrivateKey) {
        self.privateKey = privateKey
        peerId = PeerID(publicKey: privateKey.publicKey)
    }

    /// The peer id only; the private key is never printed.
    public var description: String { "PeerIdentity(\(peerId.string), private key redacted)" }
    public var debugDescription: String { description }

    /// A new random identity.
    public static func generate() -> PeerIdentity { PeerIdentity(privateKey: .init()) }

    /// Signs `message` (the KMS nonce).
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        Array(try privateKey.signature(for: message))
    }

    static let prefix: [UInt8] = [0x08, 0x01, 0x12, 0x40]

    /// Writes a new key file; refuses to overwrite an existing one.
    public func write(to path: String) throws(IdentityError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw errno == EEXIST
                ? IdentityError(.exists, "\(path) already exists; refusing to overwrite an identity")
                : IdentityError(.io, "cannot create \(path): errno \(errno)")
        }
        defer { close(descriptor) }
        let secret = SecretBytes(Self.prefix + privateKey.rawRepresentation + privateKey.publicKey.rawRepresentation)
        let written = secret.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == secret.count, fsync(descriptor) == 0 else {
            unlink(path)
            throw IdentityError(.io, "cannot write \(path): errno \(errno)")
        }
    }

    /// Reads a key file written by ``write(to:)`` (or by libp2p tooling).
    public static func read(from path: String) throws(IdentityError) -> PeerIdentity {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw IdentityError(.io, "cannot open identity file \(path): errno \(errno)") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw IdentityError(.io, "cannot stat \(path)") }
        guard status.st_mode & 0o077 == 0 else {
            throw IdentityError(.permissions, "identity file \(path) is readable by group or others; chmod 600 it")
        }
        guard status.st_size == 68 else {
            throw IdentityError(
                .format, "identity file \(path) is not a libp2p Ed25519 private key (68 bytes expected)")
        }
        var ok = false
        let contents = SecretBytes(count: 68) { buffer in ok = Glibc.read(descriptor, buffer.baseAddress, 68) == 68 }
        guard ok else { throw IdentityError(.io, "cannot read \(path)") }
        return try contents.withUnsafeBytes { bytes throws(IdentityError) -> PeerIdentity in
            guard Array(bytes.prefix(4)) == prefix else {
                throw IdentityError(.format, "identity file \(path) is not a libp2p Ed25519 private key")
            }
            guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: bytes[4..<36]),
                key.publicKey.rawRepresentation == Data(bytes[36..<68])
            else {
                throw IdentityError(.format, "identity file \(path) is corrupt: its public key does not match its seed")
            }
            return PeerIdentity(privateKey: key)
        }
    }
}
