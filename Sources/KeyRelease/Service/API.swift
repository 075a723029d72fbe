import Crypto
import Foundation
import KeyrackCore

/// `POST /challenge` request.
///
/// `{"peerId"}` alone is anonymous (anyone may ask in any peer's name).
/// With `time` and `proof` the request proves it holds the peer key and
/// counts against the peer's proven budget (``ChallengeProof``).
public struct ChallengeRequest: Codable, Sendable, Equatable {
    /// The libp2p peer id (base58btc, Ed25519).
    public let peerId: String
    /// Unix seconds the proof was made at (within 60 s of the server's clock).
    public let time: Int64?
    /// base64 Ed25519 signature over ``ChallengeProof/message(peerId:time:)``.
    public let proof: String?

    public init(peerId: String, time: Int64? = nil, proof: String? = nil) {
        self.peerId = peerId
        self.time = time
        self.proof = proof
    }
}

/// The proof of possession a client may add to `POST /challenge`.
public enum ChallengeProof {
    /// `"keyrack-challenge-v1" ‖ 0x00 ‖ peerId ‖ 0x00 ‖ time (8 bytes, big-endian)`.
    public static func message(peerId: String, time: Int64) -> [UInt8] {
        Array("keyrack-challenge-v1".utf8) + [0] + Array(peerId.utf8) + [0] + UInt64(bitPattern: time).bigEndianBytes
    }
}

/// `POST /challenge` answer.
public struct ChallengeResponse: Codable, Sendable, Equatable {
    /// UUID v4, lower case.
    public let challengeId: String
    /// 32 bytes, hex.
    public let nonce: String
    /// RFC 3339.
    public let expiresAt: String
}

/// `POST /get-key` request.
public struct GetKeyRequest: Codable, Sendable, Equatable {
    public let challengeId: String
    /// The TDX quote, base64.
    public let quote: String
    /// Ed25519 signature over the 32 raw nonce bytes, base64.
    public let signature: String
    /// An X25519 public key (32 bytes, base64) held inside the TD: the key
    /// is then answered HPKE-sealed to it (``KeyWrapping``), and the quote
    /// must bind it.
    public let wrapKey: String?

    public init(challengeId: String, quote: String, signature: String, wrapKey: String? = nil) {
        self.challengeId = challengeId
        self.quote = quote
        self.signature = signature
        self.wrapKey = wrapKey
    }
}

/// `POST /get-key` answer: `key` in plain, or `wrappedKey` when the
/// request carried a `wrapKey` — never both.
public struct GetKeyResponse: Codable, Sendable, Equatable {
    /// 32 bytes, base64.
    public let key: String?
    /// base64 of HPKE `enc` (32 bytes) ‖ ciphertext (32 + 16 bytes).
    public let wrappedKey: String?

    public init(key: String) {
        self.key = key
        self.wrappedKey = nil
    }

    public init(wrappedKey: String) {
        self.key = nil
        self.wrappedKey = wrappedKey
    }
}

/// The key sealed to the TD: RFC 9180 HPKE in base mode with
/// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305,
/// `info = "keyrack-kms-v1 key release" ‖ 0x00 ‖ challengeId`, empty aad.
public enum KeyWrapping {
    /// The ciphersuite.
    public static let ciphersuite = HPKE.Ciphersuite.Curve25519_SHA256_ChachaPoly

    /// The encodings (bit 255 cleared) of the X25519 points of small order:
    /// with one of them every shared secret is zero, so a key sealed to it
    /// could be opened by anyone (RFC 9180, section 7.1.4; RFC 7748, section 6.1).
    public static let smallOrderPoints: [[UInt8]] = [
        [UInt8](repeating: 0, count: 32),  // 0
        [1] + [UInt8](repeating: 0, count: 31),  // 1
        [UInt8](hex: "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")!,  // order 8
        [UInt8](hex: "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")!,  // order 8
        [0xEC] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],  // p − 1
        [0xED] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],  // p (0)
        [0xEE] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],  // p + 1 (1)
    ]

    /// Whether `raw` is not one of ``smallOrderPoints`` (compared in constant
    /// time, without a Diffie-Hellman operation).
    public static func hasFullOrder(_ raw: [UInt8]) -> Bool {
        var masked = raw
        masked[31] &= 0x7F
        var matches: UInt8 = 0
        for point in smallOrderPoints {
            var difference: UInt8 = 0
            for index in 0..<32 { difference |= point[index] ^ masked[index] }
            // 1 when equal, in constant time.
            matches |= UInt8(truncatingIfNeeded: (UInt16(difference) &- 1) >> 8) & 1
        }
        return matches == 0
    }

    /// The HPKE info string for a challenge.
    public static func info(challengeId: String) -> Data {
        Data("keyrack-kms-v1 key release".utf8) + [0] + Data(challengeId.utf8)
    }

    /// The report data a quote must carry when a wrap key is sent:
    /// `nonce ‖ SHA-256(peerId ‖ 0x00 ‖ wrapKey)`; without one, `nonce ‖ SHA-256(peerId)`.
    public static func reportData(nonce: [UInt8], peerId: String, wrapKey: [UInt8]?) -> [UInt8] {
        var hash = SHA256()
        hash.update(data: Array(peerId.utf8))
        if let wrapKey {
            hash.update(data: [0])
            hash.update(data: wrapKey)
        }
        return nonce + Array(hash.finalize())
    }

    /// `enc ‖ ciphertext` of `key` for `recipient`.
    public static func seal(
        _ key: SecretBytes, to recipient: Curve25519.KeyAgreement.PublicKey, challengeId: String
    ) throws -> [UInt8] {
        var sender = try HPKE.Sender(
            recipientKey: recipient, ciphersuite: ciphersuite, info: info(challengeId: challengeId))
        let sealed = try key.withUnsafeBytes { try sender.seal($0, authenticating: Data()) }
        return Array(sender.encapsulatedKey) + Array(sealed)
    }

    /// The key inside `wrapped`, opened with the TD's private key.
    public static func open(
        _ wrapped: [UInt8], with privateKey: Curve25519.KeyAgreement.PrivateKey, challengeId: String
    ) throws -> SecretBytes {
        guard wrapped.count == 32 + 32 + 16 else { throw CryptoKitError.incorrectParameterSize }
        var recipient = try HPKE.Recipient(
            privateKey: privateKey, ciphersuite: ciphersuite, info: info(challengeId: challengeId),
            encapsulatedKey: Data(wrapped[0..<32]))
        var opened = try recipient.open(Data(wrapped[32...]), authenticating: Data())
        defer { opened.resetBytes(in: 0..<opened.count) }
        return SecretBytes(opened)
    }
}
