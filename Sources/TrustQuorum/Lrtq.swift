import Crypto
import KeyrackCore
import SecretSharing

/// A spare LRTQ share, encrypted under the LRTQ key
/// (``Lrtq/key(secret:rackId:)``) so that only a node that rebuilt the LRTQ
/// secret can hand it to a node added later.
///
/// ChaCha20-Poly1305 with the nonce `0…0 || x`: the key is fixed for the
/// rack, and each x-coordinate is encrypted exactly once.
public struct EncryptedLrtqShare: Sendable, Hashable, Codable {
    /// The x-coordinate of the share (public).
    public let x: UInt8
    /// The ciphertext of the share's y bytes followed by the 16-byte tag.
    public let ciphertext: [UInt8]

    /// An encrypted share from its x-coordinate (non-zero) and its
    /// ciphertext with the tag (at least 17 bytes); anything else is refused.
    public init?(x: UInt8, ciphertext: [UInt8]) {
        guard x != 0, ciphertext.count > 16 else { return nil }
        self.x = x
        self.ciphertext = ciphertext
    }

    private enum CodingKeys: String, CodingKey {
        case x
        case ciphertext
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let x = try container.decode(UInt8.self, forKey: .x)
        let text = try container.decode(String.self, forKey: .ciphertext)
        guard let bytes = [UInt8](hex: text), let value = EncryptedLrtqShare(x: x, ciphertext: bytes) else {
            throw DecodingError.dataCorruptedError(
                forKey: .ciphertext,
                in: container,
                debugDescription: "an encrypted LRTQ share has a non-zero x and at least 17 bytes of ciphertext, in hex"
            )
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(x, forKey: .x)
        try container.encode(ciphertext.hexString, forKey: .ciphertext)
    }
}

/// What a node of a legacy (LRTQ) rack keeps: its own LRTQ share, its part
/// of the spare shares (encrypted), the threshold and the digests of all 255
/// LRTQ shares. A node drops it at its first committed trust-quorum
/// configuration and never goes back.
public struct LrtqState: Sendable, Equatable, Codable {
    /// The digests of every LRTQ share (255 of them), in x order.
    public var shareDigests: [ShareDigest]
    /// K: how many LRTQ shares rebuild the LRTQ secret.
    public var threshold: Int
    /// This node's LRTQ share.
    public var share: Share
    /// The spare shares this node can still hand to nodes added under LRTQ.
    public var spareShares: [EncryptedLrtqShare]

    /// A state from its parts.
    public init(shareDigests: [ShareDigest], threshold: Int, share: Share, spareShares: [EncryptedLrtqShare]) {
        self.shareDigests = shareDigests
        self.threshold = threshold
        self.share = share
        self.spareShares = spareShares
    }

    /// Whether `share` is one of the LRTQ shares (its digest is in the set).
    public func isKnown(_ share: Share) -> Bool {
        let index = Int(share.x) - 1
        guard shareDigests.indices.contains(index) else { return false }
        return shareDigests[index].matches(share)
    }

    private enum CodingKeys: String, CodingKey {
        case shareDigests
        case threshold
        case shareX
        case shareY
        case spareShares
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        shareDigests = try container.decode([ShareDigest].self, forKey: .shareDigests)
        threshold = try container.decode(Int.self, forKey: .threshold)
        let x = try container.decode(UInt8.self, forKey: .shareX)
        guard let y = SecretBytes(hex: try container.decode(String.self, forKey: .shareY)),
            let share = try? Share(x: x, y: y)
        else {
            throw DecodingError.dataCorruptedError(
                forKey: .shareY,
                in: container,
                debugDescription: "the LRTQ share is malformed"
            )
        }
        self.share = share
        spareShares = try container.decode([EncryptedLrtqShare].self, forKey: .spareShares)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(shareDigests, forKey: .shareDigests)
        try container.encode(threshold, forKey: .threshold)
        try container.encode(share.x, forKey: .shareX)
        try container.encode(share.y.withUnsafeBytes { $0.hexString }, forKey: .shareY)
        try container.encode(spareShares, forKey: .spareShares)
    }
}

/// Why an LRTQ operation was refused.
public struct LrtqError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// LRTQ setup with N outside 3…254 (at least one spare share must remain).
        case memberCountOutOfRange = "LRTQ-MEMBER-COUNT"
        /// LRTQ setup with K outside 2 ≤ K < N.
        case thresholdOutOfRange = "LRTQ-THRESHOLD"
        /// The node is not in LRTQ (it never was, or it committed a
        /// trust-quorum configuration and left it for good).
        case notInLrtq = "LRTQ-NOT-IN-LRTQ"
        /// The node has no spare share left to hand out.
        case noSpareShare = "LRTQ-NO-SPARE"
        /// A spare share did not decrypt, or its digest is not in the set (an
        /// alarm was raised).
        case spareShareInvalid = "LRTQ-SPARE-INVALID"
    }

    /// What went wrong.
    public let code: Code
    /// A sentence for people.
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// The legacy trust quorum (LRTQ): one rack secret split at rack setup into
/// 255 shares.
///
/// Deprecated: LRTQ has no rotation, no expungement and no attestation.
/// Racks start in it only because they shipped with it; they leave it with
/// ``Node/upgradeFromLrtq(_:using:)``, and nothing ever goes back.
public enum Lrtq {
    /// The number of LRTQ shares drawn at setup.
    public static let shareCount = 255

    /// The info prefix of the key that encrypts the spare shares.
    public static let keyInfoPrefix = Array("keyrack-lrtq-v0-key-shares-".utf8)

    /// The outcome of the LRTQ setup.
    public struct Setup: Sendable {
        /// What each initial member keeps.
        public let states: [PlatformId: LrtqState]
        /// The LRTQ secret (redacted when printed). The dealer forgets it;
        /// tests and the simulator keep it to check the upgrade.
        public let secret: RackSecret
    }

    /// The key that encrypts the spare shares:
    /// `HKDF-SHA256(ikm: secret, salt: empty, info: "keyrack-lrtq-v0-key-shares-" || rackId)`.
    public static func key(secret: RackSecret, rackId: RackId) -> SecretBytes {
        KeyDerivation.hkdfSHA256(ikm: secret.bytes, salt: [], info: keyInfoPrefix + rackId.bytes, length: 32)
    }

    /// Sets up an LRTQ rack, as its trusted dealer: draws the secret, splits
    /// it into 255 shares, gives member i (in platform-id order) share i + 1
    /// in the clear and an equal part of the remaining shares encrypted, and
    /// gives everyone the 255 digests.
    public static func setUp(
        rackId: RackId,
        members: Set<PlatformId>,
        threshold: Int? = nil,
        using random: inout some SecureRandomSource
    ) throws(LrtqError) -> Setup {
        let n = members.count
        guard (3..<shareCount).contains(n) else {
            throw LrtqError(code: .memberCountOutOfRange, reason: "\(n) members; LRTQ allows 3…\(shareCount - 1)")
        }
        let k = threshold ?? ReconfigureRequest.defaultThreshold(memberCount: n)
        guard k >= 2, k < n else {
            throw LrtqError(code: .thresholdOutOfRange, reason: "threshold \(k) with \(n) members; need 2 ≤ K < N")
        }
        let secret = RackSecret.random(using: &random)
        // 2 ≤ K < N < 255 and the secret is 32 bytes.
        let shares = try! Shamir.split(secret.bytes, threshold: k, shares: shareCount, using: &random)
        let digests = shares.map(\.digest)
        let key = Self.key(secret: secret, rackId: rackId)
        let sorted = members.sorted()
        var states: [PlatformId: LrtqState] = [:]
        for (index, member) in sorted.enumerated() {
            let spares = stride(from: n + index, to: shareCount, by: n).map { seal(shares[$0], under: key) }
            states[member] = LrtqState(shareDigests: digests, threshold: k, share: shares[index], spareShares: spares)
        }
        return Setup(states: states, secret: secret)
    }

    static func seal(_ share: Share, under key: SecretBytes) -> EncryptedLrtqShare {
        let box = share.y.withUnsafeBytes { plain in
            key.withUnsafeBytes { keyBytes in
                try! ChaChaPoly.seal(plain, using: SymmetricKey(data: keyBytes), nonce: nonce(share.x))
            }
        }
        return EncryptedLrtqShare(x: share.x, ciphertext: Array(box.ciphertext) + Array(box.tag))!
    }

    /// Decrypts a spare share with the LRTQ secret; `nil` if it does not
    /// authenticate.
    public static func open(_ encrypted: EncryptedLrtqShare, secret: RackSecret, rackId: RackId) -> Share? {
        let key = Self.key(secret: secret, rackId: rackId)
        let split = encrypted.ciphertext.count - 16
        guard
            let box = try? ChaChaPoly.SealedBox(
                nonce: nonce(encrypted.x),
                ciphertext: encrypted.ciphertext[..<split],
                tag: encrypted.ciphertext[split...]
            ),
            var plain = try? key.withUnsafeBytes({ try ChaChaPoly.open(box, using: SymmetricKey(data: $0)) })
        else { return nil }
        defer { plain.withUnsafeMutableBytes { secureZero($0) } }
        return try? Share(x: encrypted.x, y: SecretBytes(plain))
    }

    private static func nonce(_ x: UInt8) -> ChaChaPoly.Nonce {
        try! ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 11) + [x])
    }
}

/// LRTQ shares gathered from peers: each must have a digest in the set, and
/// no x-coordinate or sender counts twice.
struct LrtqShareCollector: Sendable {
    let threshold: Int
    /// Keyed by x-coordinate.
    private(set) var shares: [UInt8: Share] = [:]
    private(set) var senders: Set<PlatformId> = []

    init(threshold: Int) { self.threshold = threshold }

    enum Outcome: Equatable {
        case accepted
        /// A resend from a sender already counted.
        case ignored
        /// An unknown digest, or an x-coordinate another sender already presented.
        case rejected
    }

    mutating func add(_ share: Share, from sender: PlatformId, lrtq: LrtqState) -> Outcome {
        guard !senders.contains(sender) else { return .ignored }
        guard lrtq.isKnown(share), shares[share.x] == nil else { return .rejected }
        shares[share.x] = share
        senders.insert(sender)
        return .accepted
    }

    var isComplete: Bool { shares.count >= threshold }

    /// What to ask `peer` for when it connects: its LRTQ share, unless it sent one.
    func request(for peer: PlatformId) -> Message.Kind? { senders.contains(peer) ? nil : .getLrtqShare }

    /// Exactly K shares, in x order.
    var orderedShares: [Share] {
        Array(shares.values.sorted { $0.x < $1.x }.prefix(threshold))
    }

    /// Combines the gathered shares into the LRTQ secret.
    func combine() throws(SecretSharingError) -> RackSecret {
        let combined = try Shamir.combine(orderedShares, threshold: threshold)
        guard let secret = RackSecret(combined) else { throw SecretSharingError.emptySecret }
        return secret
    }
}
