import Crypto
import Foundation
import KeyrackCore
import SecretSharing

/// The secret of one epoch: 32 random bytes, never all zero. Disk keys are
/// derived from it; it is never stored, only rebuilt from shares.
public struct RackSecret: Sendable, Equatable, CustomStringConvertible {
    /// The bytes, in zeroizing storage.
    public let bytes: SecretBytes

    /// The length of a rack secret in bytes.
    public static let byteCount = 32

    /// Wraps 32 bytes that are not all zero; anything else is refused.
    public init?(_ bytes: SecretBytes) {
        guard bytes.count == Self.byteCount else { return nil }
        let allZero = bytes.withUnsafeBytes { buffer in buffer.reduce(UInt8(0)) { $0 | $1 } == 0 }
        guard !allZero else { return nil }
        self.bytes = bytes
    }

    /// Draws a fresh secret, drawing again in the (2⁻²⁵⁶) case of all zeros.
    public static func random(using random: inout some SecureRandomSource) -> RackSecret {
        while true {
            if let secret = RackSecret(random.secretBytes(byteCount)) { return secret }
        }
    }

    /// Redacted.
    public var description: String { "RackSecret(redacted)" }
}

/// HKDF-SHA256 (RFC 5869) as used throughout Keyrack.
public enum KeyDerivation {
    /// HKDF-SHA256 extract-and-expand of `ikm` into `length` bytes.
    public static func hkdfSHA256(
        ikm: SecretBytes,
        salt: [UInt8],
        info: [UInt8],
        length: Int
    ) -> SecretBytes {
        let inputKey = ikm.withUnsafeBytes { SymmetricKey(data: $0) }
        let key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: inputKey,
            salt: salt,
            info: info,
            outputByteCount: length
        )
        return key.withUnsafeBytes { SecretBytes($0) }
    }

    /// The info prefix of the rack-secret chain key.
    public static let chainInfoPrefix = Array("keyrack-tq-v1-rack-secrets".utf8)
    /// The info prefix of the rack secret's check value.
    public static let checkInfoPrefix = Array("keyrack-secret-check-v1".utf8)

    /// A check value of the rack secret of `epoch`, as HSMs print key check
    /// values: the first 8 bytes of `HKDF-SHA256(ikm: secret, salt:
    /// SHA-256(rackId), info: "keyrack-secret-check-v1" || epoch BE u64)`.
    /// Equal on two nodes exactly when they loaded the same secret; 64 bits
    /// of a one-way function of a 256-bit secret, so it helps nobody guess it.
    public static func checkValue(secret: RackSecret, rackId: RackId, epoch: Epoch) -> [UInt8] {
        let value = hkdfSHA256(
            ikm: secret.bytes, salt: Array(SHA256.hash(data: rackId.bytes)),
            info: checkInfoPrefix + epoch.value.bigEndianBytes, length: 8)
        return value.unsafeCopiedBytes
    }

    /// The info prefix of disk keys of ``DiskKeyScheme/diskOnly``.
    public static let diskInfoPrefix = Array("keyrack-disk-v1".utf8)
    /// The info prefix of disk keys of ``DiskKeyScheme/platformBound``.
    public static let platformDiskInfoPrefix = Array("keyrack-disk-v2".utf8)

    /// The key that encrypts the chain carried by the configuration of `epoch`:
    /// `HKDF-SHA256(ikm: secret, salt, info: "keyrack-tq-v1-rack-secrets" || rackId || epoch BE u64)`.
    public static func chainKey(secret: RackSecret, salt: [UInt8], rackId: RackId, epoch: Epoch) -> SecretBytes {
        var info = chainInfoPrefix
        info += rackId.bytes
        info += epoch.value.bigEndianBytes
        return hkdfSHA256(ikm: secret.bytes, salt: salt, info: info, length: 32)
    }
}

/// How a disk key is derived from the rack secret.
public enum DiskKeyScheme: Int, Sendable, Codable, Comparable, CaseIterable, CustomStringConvertible {
    /// Version 1: from the disk id alone, so the same on every node for a
    /// disk of the same name (review L10). Derived only to move a disk
    /// keyed by an earlier release onto ``platformBound``.
    case diskOnly = 1
    /// Version 2: from the node's platform id and the disk id.
    case platformBound = 2

    /// The scheme new keys use.
    public static let current = DiskKeyScheme.platformBound

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "v\(rawValue)" }
}

/// Which key a disk is keyed under: the epoch of the rack secret and the
/// derivation scheme. Ordered by epoch, then scheme, so that moving a disk
/// from an earlier release's key to this one's at the same epoch is a step
/// forward like a new epoch.
public struct DiskKeyVersion: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The epoch of the rack secret.
    public let epoch: Epoch
    /// The derivation scheme.
    public let scheme: DiskKeyScheme

    /// The key of `epoch` under `scheme`.
    public init(_ epoch: Epoch, _ scheme: DiskKeyScheme = .current) {
        self.epoch = epoch
        self.scheme = scheme
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.epoch, lhs.scheme) < (rhs.epoch, rhs.scheme) }

    public var description: String { scheme == .current ? "epoch \(epoch)" : "epoch \(epoch) (\(scheme) key)" }
}

/// A disk key, tagged with the epoch whose secret it was derived from (and
/// the scheme) so that storage can be re-keyed from the old epoch's key to
/// the new one after a commit.
public struct DiskKey: Sendable, Equatable, CustomStringConvertible {
    /// The epoch of the rack secret the key comes from.
    public let epoch: Epoch
    /// How it was derived.
    public let scheme: DiskKeyScheme
    /// The 32 key bytes.
    public let key: SecretBytes

    /// The key of `diskId` on the node `platform` at `epoch`:
    /// - ``DiskKeyScheme/platformBound``: `HKDF-SHA256(ikm: secret_e, salt:
    ///   SHA-256(rackId), info: "keyrack-disk-v2" || u16 len(part) || part ||
    ///   u16 len(serial) || serial || diskId)` (lengths big-endian, UTF-8);
    /// - ``DiskKeyScheme/diskOnly``: `info: "keyrack-disk-v1" || diskId`.
    public init(
        secret: RackSecret, epoch: Epoch, rackId: RackId, platform: PlatformId, diskId: [UInt8],
        scheme: DiskKeyScheme = .current
    ) {
        self.epoch = epoch
        self.scheme = scheme
        let salt = Array(SHA256.hash(data: rackId.bytes))
        var info: [UInt8]
        switch scheme {
        case .diskOnly:
            info = KeyDerivation.diskInfoPrefix
        case .platformBound:
            info = KeyDerivation.platformDiskInfoPrefix
            for field in [platform.part, platform.serial] {
                let bytes = Array(field.utf8)
                info += UInt16(clamping: bytes.count).bigEndianBytes
                info += bytes.prefix(Int(UInt16.max))
            }
        }
        info += diskId
        key = KeyDerivation.hkdfSHA256(ikm: secret.bytes, salt: salt, info: info, length: 32)
    }

    /// The epoch and scheme.
    public var version: DiskKeyVersion { DiskKeyVersion(epoch, scheme) }

    /// Redacted.
    public var description: String { "DiskKey(epoch: \(epoch), \(scheme), redacted)" }
}

/// Why the chain of earlier rack secrets could not be opened.
public struct RackSecretChainError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// The authentication tag did not verify: wrong secret, or tampering.
        case authenticationFailed = "TQ-CHAIN-AUTH"
        /// The plaintext is not a well-formed list of (epoch, secret).
        case malformed = "TQ-CHAIN-MALFORMED"
    }

    /// What went wrong.
    public let code: Code

    public var description: String {
        switch code {
        case .authenticationFailed: return "\(code.rawValue): the encrypted rack secrets did not authenticate"
        case .malformed: return "\(code.rawValue): the decrypted rack secrets are malformed"
        }
    }
}

/// The encrypted list of the secrets of all earlier epochs.
///
/// On a reconfiguration from e to e′ the coordinator decrypts the list e
/// carries, appends (e, secret_e) and encrypts the whole list under a key
/// from secret_e′ (``KeyDerivation/chainKey(secret:salt:rackId:epoch:)``),
/// with ChaCha20-Poly1305 and a zero nonce: each key is used once because the
/// salt is fresh. A node that missed many epochs therefore needs one
/// reconstruction and one decryption to read every earlier secret.
///
/// Plaintext: `count: u32 BE`, then per entry `epoch: u64 BE || secret: 32 bytes`.
public enum RackSecretChain {
    /// Encrypts `secrets` for the configuration of `epoch` whose secret is
    /// `secret`, with `salt` (32 fresh random bytes).
    public static func seal(
        _ secrets: [Epoch: RackSecret],
        under secret: RackSecret,
        rackId: RackId,
        epoch: Epoch,
        salt: [UInt8]
    ) -> EncryptedRackSecrets {
        precondition(salt.count == EncryptedRackSecrets.saltByteCount, "the salt is 32 bytes")
        let key = KeyDerivation.chainKey(secret: secret, salt: salt, rackId: rackId, epoch: epoch)
        let ordered = secrets.keys.sorted()
        let plaintext = SecretBytes(count: 4 + ordered.count * 40) { buffer in
            var offset = 0
            func put(_ bytes: some Collection<UInt8>) {
                for byte in bytes {
                    buffer[offset] = byte
                    offset += 1
                }
            }
            put(UInt32(ordered.count).bigEndianBytes)
            for entry in ordered {
                put(entry.value.bigEndianBytes)
                secrets[entry]!.bytes.withUnsafeBytes { put($0) }
            }
        }
        let box = plaintext.withUnsafeBytes { plain in
            key.withUnsafeBytes { keyBytes in
                try! ChaChaPoly.seal(plain, using: SymmetricKey(data: keyBytes), nonce: zeroNonce)
            }
        }
        return EncryptedRackSecrets(salt: salt, ciphertext: Array(box.ciphertext) + Array(box.tag))!
    }

    /// Decrypts the chain carried by the configuration of `epoch`.
    public static func open(
        _ encrypted: EncryptedRackSecrets,
        with secret: RackSecret,
        rackId: RackId,
        epoch: Epoch
    ) throws(RackSecretChainError) -> [Epoch: RackSecret] {
        let key = KeyDerivation.chainKey(secret: secret, salt: encrypted.salt, rackId: rackId, epoch: epoch)
        let split = encrypted.ciphertext.count - 16
        let opened: SecretBytes
        do {
            let box = try ChaChaPoly.SealedBox(
                nonce: zeroNonce,
                ciphertext: encrypted.ciphertext[..<split],
                tag: encrypted.ciphertext[split...]
            )
            var plain = try key.withUnsafeBytes { keyBytes in
                try ChaChaPoly.open(box, using: SymmetricKey(data: keyBytes))
            }
            opened = SecretBytes(plain)
            plain.withUnsafeMutableBytes { secureZero($0) }
        } catch {
            throw RackSecretChainError(code: .authenticationFailed)
        }
        return try opened.withUnsafeBytes { (plain) throws(RackSecretChainError) -> [Epoch: RackSecret] in
            guard plain.count >= 4 else { throw RackSecretChainError(code: .malformed) }
            let count = Int(plain.loadBigEndianUInt32(at: 0))
            guard plain.count == 4 + count * 40 else { throw RackSecretChainError(code: .malformed) }
            var result: [Epoch: RackSecret] = [:]
            result.reserveCapacity(count)
            for index in 0..<count {
                let base = 4 + index * 40
                let entryEpoch = Epoch(plain.loadBigEndianUInt64(at: base))
                let value = SecretBytes(UnsafeRawBufferPointer(rebasing: plain[(base + 8)..<(base + 40)]))
                guard let secret = RackSecret(value), result[entryEpoch] == nil else {
                    throw RackSecretChainError(code: .malformed)
                }
                result[entryEpoch] = secret
            }
            return result
        }
    }

    private static let zeroNonce = try! ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12))
}

extension UnsafeRawBufferPointer {
    func loadBigEndianUInt32(at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in 0..<4 { value = value << 8 | UInt32(self[offset + index]) }
        return value
    }

    func loadBigEndianUInt64(at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<8 { value = value << 8 | UInt64(self[offset + index]) }
        return value
    }
}
