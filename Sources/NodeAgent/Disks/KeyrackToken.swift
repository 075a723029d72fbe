import Foundation
import KeyrackCore
import SecretSharing
import TrustQuorum

/// The LUKS2 token Keyrack writes beside every keyslot it enrolls, so that
/// the header itself says which epoch's disk key opens which slot:
///
/// ```json
/// {"type": "keyrack", "keyslots": ["1"], "keyrack_version": "1",
///  "rack_id": "00112233445566778899aabbccddeeff", "disk_id": "data0", "epoch": "3"}
/// ```
///
/// Numbers are decimal strings, as LUKS2 writes its own 64-bit values. It
/// holds no secret: the key is derived from the rack secret of `epoch`.
/// `keyrack_version` is the key's derivation scheme (``DiskKeyScheme``):
/// "2" (this release: the platform id is in the derivation), or "1" (an
/// earlier release's key from the disk id alone, read so that the node can
/// re-key the volume onto "2").
/// Decoding is strict (exactly these fields, canonical values), so a token
/// Keyrack did not write is never taken for one it did.
public struct KeyrackToken: Sendable, Equatable, CustomStringConvertible {
    /// The token type in the header.
    public static let type = "keyrack"
    /// LUKS2 headers have keyslots and tokens 0…31.
    public static let slots = 0..<32

    /// The rack whose secret the key is derived from.
    public var rackId: RackId
    /// The disk id in the derivation.
    public var diskId: String
    /// The epoch whose secret the key is derived from.
    public var epoch: Epoch
    /// The keyslot the key is in.
    public var keyslot: Int
    /// How the key is derived (the token's `keyrack_version`).
    public var scheme: DiskKeyScheme

    /// A token from its parts.
    public init(rackId: RackId, diskId: String, epoch: Epoch, keyslot: Int, scheme: DiskKeyScheme = .current) {
        self.rackId = rackId
        self.diskId = diskId
        self.epoch = epoch
        self.keyslot = keyslot
        self.scheme = scheme
    }

    /// The key the token names: its epoch and scheme.
    public var version: DiskKeyVersion { DiskKeyVersion(epoch, scheme) }

    /// The JSON `cryptsetup token import` reads.
    public func json() -> Data {
        let object: [String: Any] = [
            "type": Self.type, "keyslots": ["\(keyslot)"], "keyrack_version": "\(scheme.rawValue)",
            "rack_id": rackId.description, "disk_id": diskId, "epoch": "\(epoch.value)",
        ]
        // Only strings and a list of one: serialization cannot fail.
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
    }

    /// Decodes a token object of type `keyrack`, refusing anything not exactly as ``json()`` writes it.
    public init(object: [String: Any]) throws(VolumeError) {
        func refuse(_ why: String) -> VolumeError { VolumeError(.header, "a keyrack token is malformed: \(why)") }
        let known: Set = ["type", "keyslots", "keyrack_version", "rack_id", "disk_id", "epoch"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw refuse("unknown field '\(unknown)'")
        }
        guard object["type"] as? String == Self.type else { throw refuse("its type is not 'keyrack'") }
        guard let version = (object["keyrack_version"] as? String).flatMap(Self.decimal),
            let scheme = DiskKeyScheme(rawValue: Int(clamping: version))
        else {
            throw refuse("keyrack_version must be \"1\" or \"2\"")
        }
        guard let slots = object["keyslots"] as? [String], slots.count == 1, let slot = Self.decimal(slots[0]),
            Self.slots.contains(Int(clamping: slot))
        else { throw refuse("keyslots must list exactly one keyslot, 0…31") }
        guard let rack = (object["rack_id"] as? String).flatMap(Self.canonicalHex).flatMap({ RackId(bytes: $0) })
        else { throw refuse("rack_id must be \(RackId.byteCount) bytes in lowercase hex") }
        guard let disk = object["disk_id"] as? String, !disk.isEmpty, disk.utf8.count <= 255 else {
            throw refuse("disk_id must be a non-empty string of at most 255 bytes")
        }
        guard let epoch = (object["epoch"] as? String).flatMap(Self.decimal), epoch > 0 else {
            throw refuse("epoch must be a positive decimal number")
        }
        self.init(rackId: rack, diskId: disk, epoch: Epoch(epoch), keyslot: Int(slot), scheme: scheme)
    }

    /// A canonical unsigned decimal (no sign, no leading zero).
    static func decimal(_ text: String) -> UInt64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            text == "0" || !text.hasPrefix("0")
        else { return nil }
        return UInt64(text)
    }

    static func canonicalHex(_ text: String) -> [UInt8]? {
        guard text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        return [UInt8](hex: text)
    }

    public var description: String {
        "keyrack token (disk \(diskId), epoch \(epoch), \(scheme) key, keyslot \(keyslot))"
    }
}
