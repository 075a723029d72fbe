import Crypto
import Foundation

/// A libp2p peer id that names an Ed25519 key, and the key it names.
///
/// The text form is base58btc of a multihash. For Ed25519 keys the
/// multihash uses the identity function, so the id contains the key itself:
/// `0x00 0x24` (identity, 36 bytes) followed by the protobuf `PublicKey`
/// message `0x08 0x01` (Type = Ed25519) `0x12 0x20` (Data, 32 bytes) and the
/// key. Ids of other key types (RSA ids hash the key with SHA-256, so the
/// key cannot be recovered; secp256k1 and ECDSA keys are not accepted here)
/// are refused.
public struct PeerID: Sendable, Hashable, CustomStringConvertible {
    /// The id as the peer sent it (base58btc).
    public let string: String
    /// The Ed25519 public key the id contains.
    public let publicKey: Curve25519.Signing.PublicKey

    /// The longest id accepted; an Ed25519 id is 52 characters.
    public static let maximumLength = 128

    /// Parses and checks `text`.
    public init(_ text: String) throws(PeerIDError) {
        guard !text.isEmpty else { throw .empty }
        guard text.utf8.count <= Self.maximumLength else { throw .tooLong(text.utf8.count) }
        guard let bytes = Base58.decode(text) else { throw .notBase58 }
        guard bytes.count >= 2 else { throw .malformedMultihash }
        let (code, length) = (bytes[0], bytes[1])
        switch code {
        case 0x00: break
        case 0x12: throw .keyNotRecoverable
        default: throw .unsupportedMultihash(code)
        }
        guard Int(length) == bytes.count - 2 else { throw .malformedMultihash }
        let message = Array(bytes.dropFirst(2))
        // PublicKey { Type (field 1, varint), Data (field 2, bytes) }.
        guard message.count >= 2, message[0] == 0x08 else { throw .malformedKey }
        guard message[1] == 1 else { throw .unsupportedKeyType(message[1]) }
        guard message.count == 36, message[2] == 0x12, message[3] == 0x20 else { throw .malformedKey }
        do {
            publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: message.suffix(32))
        } catch {
            throw .malformedKey
        }
        string = text
    }

    /// The id of an Ed25519 public key.
    public init(publicKey: Curve25519.Signing.PublicKey) {
        self.publicKey = publicKey
        let message: [UInt8] = [0x08, 0x01, 0x12, 0x20] + publicKey.rawRepresentation
        string = Base58.encode([0x00, UInt8(message.count)] + message)
    }

    /// Whether `signature` is the key's Ed25519 signature over `message`.
    public func isValidSignature(_ signature: some DataProtocol, for message: some DataProtocol) -> Bool {
        publicKey.isValidSignature(signature, for: message)
    }

    /// The protobuf-encoded public key (`PublicKey { Type, Data }`).
    public var protobufPublicKey: [UInt8] { [0x08, 0x01, 0x12, 0x20] + publicKey.rawRepresentation }

    public var description: String { string }

    public static func == (lhs: PeerID, rhs: PeerID) -> Bool { lhs.string == rhs.string }
    public func hash(into hasher: inout Hasher) { hasher.combine(string) }
}

/// Why a peer id was refused. The KMS answers each with `400 InvalidPeerId`.
public enum PeerIDError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case tooLong(Int)
    case notBase58
    case malformedMultihash
    case keyNotRecoverable
    case unsupportedMultihash(UInt8)
    case unsupportedKeyType(UInt8)
    case malformedKey

    public var description: String {
        switch self {
        case .empty: return "the peer id is empty"
        case .tooLong(let length):
            return "the peer id is \(length) characters long, at most \(PeerID.maximumLength) allowed"
        case .notBase58: return "the peer id is not base58btc"
        case .malformedMultihash: return "the peer id is not a well-formed multihash"
        case .keyNotRecoverable:
            return "the peer id is a SHA-256 hash of its key (an RSA peer): the key cannot be recovered from it"
        case .unsupportedMultihash(let code): return "unsupported multihash function 0x\(String(code, radix: 16))"
        case .unsupportedKeyType(let type):
            let names: [UInt8: String] = [0: "RSA", 2: "secp256k1", 3: "ECDSA"]
            return "the peer id names a \(names[type] ?? "type \(type)") key; only Ed25519 is accepted"
        case .malformedKey: return "the peer id does not contain a valid Ed25519 public key"
        }
    }
}
