import Crypto
import KeyrackCore
import SecretSharing

/// The rack secrets of all earlier epochs, encrypted under a key derived from
/// the secret of the configuration that carries them (see ``RackSecretChain``).
public struct EncryptedRackSecrets: Sendable, Hashable, Codable {
    /// The 32 random bytes of HKDF salt.
    public let salt: [UInt8]
    /// The ChaCha20-Poly1305 ciphertext followed by its 16-byte tag.
    public let ciphertext: [UInt8]

    /// The length of the salt in bytes.
    public static let saltByteCount = 32

    /// The encrypted chain from its salt (32 bytes) and its ciphertext with
    /// the tag (at least 16 bytes); anything else is refused.
    public init?(salt: [UInt8], ciphertext: [UInt8]) {
        guard salt.count == Self.saltByteCount, ciphertext.count >= 16 else { return nil }
        self.salt = salt
        self.ciphertext = ciphertext
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let saltText = try container.decode(String.self, forKey: .salt)
        let cipherText = try container.decode(String.self, forKey: .ciphertext)
        guard let salt = [UInt8](hex: saltText), let ciphertext = [UInt8](hex: cipherText),
            let value = EncryptedRackSecrets(salt: salt, ciphertext: ciphertext)
        else {
            throw DecodingError.dataCorruptedError(
                forKey: .salt,
                in: container,
                debugDescription: "salt is 32 bytes and the ciphertext at least 16, in hex"
            )
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(salt.hexString, forKey: .salt)
        try container.encode(ciphertext.hexString, forKey: .ciphertext)
    }

    private enum CodingKeys: String, CodingKey {
        case salt
        case ciphertext
    }
}

/// Why a configuration was refused. Every configuration in memory satisfies
/// these rules, so the code that uses one never re-checks them.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// The number of members is outside 2…255 (the wire limit; requests are
        /// held to tighter bounds by ``ValidatedReconfigureRequest``).
        case memberCountOutOfRange = "TQ-CFG-MEMBERS"
        /// The threshold is outside 2 ≤ K ≤ N.
        case thresholdOutOfRange = "TQ-CFG-THRESHOLD"
        /// The coordinator is not a member.
        case coordinatorNotMember = "TQ-CFG-COORDINATOR"
        /// A platform id field is empty or longer than 255 bytes.
        case invalidPlatformId = "TQ-CFG-PLATFORM-ID"
    }

    /// The rule that was broken.
    public let code: Code
    /// A sentence for people.
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// The configuration of one epoch: who the members are, the threshold, the
/// digests of the members' shares and the encrypted secrets of earlier epochs.
///
/// Built only through the validating initializer, so every value satisfies
/// 2 ≤ K ≤ N ≤ 255 and has its coordinator among its members. Equality
/// compares a SHA-256 fingerprint of the canonical wire encoding, computed
/// once at creation.
public struct Configuration: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The rack this configuration belongs to.
    public let rackId: RackId
    /// The epoch.
    public let epoch: Epoch
    /// The node that coordinated the reconfiguration.
    public let coordinator: PlatformId
    /// Each member's share digest.
    public let members: [PlatformId: ShareDigest]
    /// K: how many shares rebuild the secret.
    public let threshold: Int
    /// The secrets of all earlier epochs, or `nil` for the first epoch.
    public let encryptedRackSecrets: EncryptedRackSecrets?
    /// The members in platform-id order: member i has x-coordinate i + 1.
    public let sortedMembers: [PlatformId]
    /// SHA-256 of the canonical encoding.
    public let fingerprint: [UInt8]

    /// Checks the rules and builds the configuration.
    public init(
        rackId: RackId,
        epoch: Epoch,
        coordinator: PlatformId,
        members: [PlatformId: ShareDigest],
        threshold: Int,
        encryptedRackSecrets: EncryptedRackSecrets?
    ) throws(ConfigurationError) {
        guard (2...Shamir.maximumShares).contains(members.count) else {
            throw ConfigurationError(
                code: .memberCountOutOfRange,
                reason: "\(members.count) members; a configuration has 2 to 255"
            )
        }
        guard (2...members.count).contains(threshold) else {
            throw ConfigurationError(
                code: .thresholdOutOfRange,
                reason: "threshold \(threshold) is outside 2…\(members.count)"
            )
        }
        guard members[coordinator] != nil else {
            throw ConfigurationError(code: .coordinatorNotMember, reason: "coordinator \(coordinator) is not a member")
        }
        for id in members.keys where !Self.isValid(id) {
            throw ConfigurationError(code: .invalidPlatformId, reason: "a platform id field is empty or too long")
        }
        self.rackId = rackId
        self.epoch = epoch
        self.coordinator = coordinator
        self.members = members
        self.threshold = threshold
        self.encryptedRackSecrets = encryptedRackSecrets
        self.sortedMembers = members.keys.sorted()
        var writer = ByteWriter()
        writer.writeConfigurationBody(
            rackId: rackId,
            epoch: epoch,
            coordinator: coordinator,
            sortedMembers: sortedMembers,
            members: members,
            threshold: threshold,
            encryptedRackSecrets: encryptedRackSecrets
        )
        self.fingerprint = Array(SHA256.hash(data: writer.bytes))
    }

    /// Whether `id`'s part and serial are each 1…255 bytes, as a member's must be.
    public static func isValid(_ id: PlatformId) -> Bool {
        let part = id.part.utf8.count
        let serial = id.serial.utf8.count
        return (1...PlatformId.maximumFieldLength).contains(part)
            && (1...PlatformId.maximumFieldLength).contains(serial)
    }

    /// N, the number of members.
    public var memberCount: Int { members.count }

    /// The x-coordinate of `member`, or `nil` if it is not a member.
    public func xCoordinate(of member: PlatformId) -> UInt8? {
        guard members[member] != nil else { return nil }
        // sortedMembers is sorted: binary search.
        var low = 0
        var high = sortedMembers.count
        while low < high {
            let mid = (low + high) / 2
            if sortedMembers[mid] < member { low = mid + 1 } else { high = mid }
        }
        return UInt8(low + 1)
    }

    /// Whether `share` is the share of `member` in this configuration: its
    /// x-coordinate is the member's and its digest is the one recorded.
    public func validates(_ share: Share, from member: PlatformId) -> Bool {
        guard let digest = members[member], let x = xCoordinate(of: member) else { return false }
        return share.x == x && digest.matches(share)
    }

    public static func == (lhs: Configuration, rhs: Configuration) -> Bool {
        lhs.fingerprint == rhs.fingerprint
    }

    public var description: String {
        "Configuration(epoch: \(epoch), coordinator: \(coordinator), N: \(memberCount), K: \(threshold))"
    }

    // MARK: Codable

    private enum CodingKeys: String, CodingKey {
        case rackId
        case epoch
        case coordinator
        case members
        case threshold
        case encryptedRackSecrets
    }

    private struct Member: Codable {
        var id: PlatformId
        var digest: ShareDigest
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let list = try container.decode([Member].self, forKey: .members)
        var members: [PlatformId: ShareDigest] = [:]
        for member in list { members[member.id] = member.digest }
        guard members.count == list.count else {
            throw DecodingError.dataCorruptedError(
                forKey: .members,
                in: container,
                debugDescription: "duplicate member"
            )
        }
        do {
            try self.init(
                rackId: try container.decode(RackId.self, forKey: .rackId),
                epoch: try container.decode(Epoch.self, forKey: .epoch),
                coordinator: try container.decode(PlatformId.self, forKey: .coordinator),
                members: members,
                threshold: try container.decode(Int.self, forKey: .threshold),
                encryptedRackSecrets: try container.decodeIfPresent(
                    EncryptedRackSecrets.self,
                    forKey: .encryptedRackSecrets
                )
            )
        } catch let error as ConfigurationError {
            throw DecodingError.dataCorruptedError(
                forKey: .members,
                in: container,
                debugDescription: error.description
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(rackId, forKey: .rackId)
        try container.encode(epoch, forKey: .epoch)
        try container.encode(coordinator, forKey: .coordinator)
        try container.encode(sortedMembers.map { Member(id: $0, digest: members[$0]!) }, forKey: .members)
        try container.encode(threshold, forKey: .threshold)
        try container.encodeIfPresent(encryptedRackSecrets, forKey: .encryptedRackSecrets)
    }
}
