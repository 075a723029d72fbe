import Crypto
import KeyrackCore

/// One member's share of a secret: the value `y` of the secret polynomial at
/// the member's x-coordinate, for every byte of the secret.
///
/// The value is secret: it is held in ``SecretBytes`` (zeroed on release,
/// compared in constant time) and never printed.
public struct Share: Sendable, Equatable, CustomStringConvertible {
    /// The x-coordinate, 1…255 (0 is where the secret itself sits).
    public let x: UInt8
    /// The polynomial's values at `x`, one per secret byte.
    public let y: SecretBytes

    /// A share from its coordinate and value; x = 0 and an empty value are refused.
    public init(x: UInt8, y: SecretBytes) throws(SecretSharingError) {
        guard x != 0 else { throw .zeroCoordinate }
        guard y.count > 0 else { throw .emptySecret }
        self.x = x
        self.y = y
    }

    /// For coordinates and values this module has produced (x ≠ 0, non-empty).
    init(validatedX x: UInt8, y: SecretBytes) {
        assert(x != 0 && y.count > 0)
        self.x = x
        self.y = y
    }

    /// The number of bytes, equal to the secret's length.
    public var count: Int { y.count }

    /// The SHA-256 digest of the share (`x ‖ y`), which configurations store
    /// so that a share presented later can be validated without keeping it.
    public var digest: ShareDigest { ShareDigest(of: self) }

    /// Redacted: the coordinate and length only.
    public var description: String { "Share(x: \(x), \(y.count) bytes, redacted)" }

    /// Constant-time in the value; the coordinates are public.
    public static func == (lhs: Share, rhs: Share) -> Bool {
        // Evaluate both parts so the time does not depend on which differs.
        let sameX = lhs.x == rhs.x
        let sameY = lhs.y == rhs.y
        return sameX && sameY
    }
}

/// The SHA-256 digest of a share's bytes (`x ‖ y`). Not secret.
public struct ShareDigest: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let bytes: [UInt8]

    /// A digest from its 32 bytes; any other length is refused.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// The digest of `share`.
    public init(of share: Share) {
        var hasher = SHA256()
        hasher.update(data: [share.x])
        share.y.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        bytes = Array(hasher.finalize())
    }

    /// Whether `share` has this digest, compared in constant time.
    public func matches(_ share: Share) -> Bool {
        constantTimeEqual(bytes, ShareDigest(of: share).bytes)
    }

    /// Lower-case hex.
    public var hex: String { bytes.hexString }

    public var description: String { "ShareDigest(\(hex))" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let raw = [UInt8](hex: text), let digest = ShareDigest(bytes: raw) else {
            throw DecodingError.dataCorruptedError(
                in: container,
                debugDescription: "a share digest is 64 hex characters"
            )
        }
        self = digest
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}
