import KeyrackCore
import SecretSharing

/// A node's platform identity: the part number and serial number that the
/// manufacturing certificate binds to the node's device key.
///
/// In production the platform id of a peer comes from the certificate of the
/// authenticated channel, never from a message. Platform ids are ordered by
/// part number, then serial number; the members of a configuration sorted in
/// this order get the x-coordinates 1, 2, 3, …
public struct PlatformId: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The part number.
    public let part: String
    /// The serial number.
    public let serial: String
    /// The hash of both fields, computed once: platform ids key the
    /// dictionaries and sets the node and the simulator touch on every
    /// message, and hashing two strings each time showed in profiles. Never
    /// encoded (Swift's hashes are seeded per process).
    private let hashCode: Int

    /// The longest part or serial number accepted, in UTF-8 bytes.
    public static let maximumFieldLength = 255

    /// A platform id from its part and serial numbers.
    public init(part: String, serial: String) {
        self.part = part
        self.serial = serial
        var hasher = Hasher()
        hasher.combine(part)
        hasher.combine(serial)
        hashCode = hasher.finalize()
    }

    /// Parses the text form `part:serial` (``description``'s): split at the
    /// first colon, both sides non-empty; `nil` otherwise.
    public init?(parsing text: some StringProtocol) {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex,
            text.index(after: colon) != text.endIndex
        else { return nil }
        self.init(part: String(text[..<colon]), serial: String(text[text.index(after: colon)...]))
    }

    private enum CodingKeys: String, CodingKey {
        case part, serial
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            part: try container.decode(String.self, forKey: .part),
            serial: try container.decode(String.self, forKey: .serial)
        )
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(part, forKey: .part)
        try container.encode(serial, forKey: .serial)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(hashCode)
    }

    public static func == (lhs: PlatformId, rhs: PlatformId) -> Bool {
        lhs.hashCode == rhs.hashCode && lhs.part == rhs.part && lhs.serial == rhs.serial
    }

    public static func < (lhs: PlatformId, rhs: PlatformId) -> Bool {
        if lhs.part != rhs.part { return lhs.part < rhs.part }
        return lhs.serial < rhs.serial
    }

    /// `part:serial`.
    public var description: String { "\(part):\(serial)" }
}

/// The identity of a rack: 16 bytes drawn at rack setup. Every message and
/// every configuration carries it; a message for another rack is dropped.
public struct RackId: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The 16 bytes.
    public let bytes: [UInt8]

    /// The length of a rack id in bytes.
    public static let byteCount = 16

    /// A rack id from its 16 bytes; any other length is refused.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// A fresh random rack id.
    public static func random(using random: inout some SecureRandomSource) -> RackId {
        RackId(bytes: random.bytes(byteCount))!
    }

    /// Lower-case hex.
    public var description: String { bytes.hexString }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let raw = [UInt8](hex: text), let id = RackId(bytes: raw) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "a rack id is 32 hex characters")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A configuration's epoch. Epochs only grow: every reconfiguration uses an
/// epoch greater than every epoch seen before. Epoch 1 is reserved for the
/// legacy (LRTQ) configuration when a rack is upgraded from it.
public struct Epoch: Sendable, Hashable, Comparable, Codable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The epoch number.
    public let value: UInt64

    /// An epoch from its number.
    public init(_ value: UInt64) { self.value = value }

    public init(integerLiteral value: UInt64) { self.value = value }

    /// The next epoch; `nil` after the last one (epoch arithmetic never traps).
    public var next: Epoch? { value == .max ? nil : Epoch(value + 1) }

    /// How far above the latest committed epoch a ticket, a `Prepare` or a
    /// configuration may be: 2^32. A peer cannot push a node (or the
    /// operator, which starts above the highest epoch it has seen) to the
    /// end of the epoch space, where no reconfiguration could follow.
    public static let maximumAdvance: UInt64 = 1 << 32

    /// Whether this epoch is at most ``maximumAdvance`` above `base` (the
    /// latest committed epoch; none is epoch 0). Epochs at or below `base`
    /// are within reach: whether they are stale is decided elsewhere.
    public func isWithinReach(of base: Epoch?) -> Bool {
        let floor = base?.value ?? 0
        return value <= floor || value - floor <= Self.maximumAdvance
    }

    /// The epoch the legacy (LRTQ) secret takes in the chain after the upgrade.
    public static let lrtq: Epoch = 1

    public static func < (lhs: Epoch, rhs: Epoch) -> Bool { lhs.value < rhs.value }

    public var description: String { "\(value)" }

    public init(from decoder: any Decoder) throws {
        value = try decoder.singleValueContainer().decode(UInt64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}
