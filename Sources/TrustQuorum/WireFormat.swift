import KeyrackCore
import SecretSharing

/// Why bytes from the network were refused. Decoding never traps: every
/// malformed input ends here.
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// The frame's length prefix exceeds ``WireFormat/maximumFrameLength``.
        case frameTooLarge = "TQ-WIRE-FRAME-TOO-LARGE"
        /// The input ended inside a field.
        case truncated = "TQ-WIRE-TRUNCATED"
        /// The format version is not one this code reads.
        case unsupportedVersion = "TQ-WIRE-VERSION"
        /// The message tag names no message.
        case unknownMessage = "TQ-WIRE-UNKNOWN-MESSAGE"
        /// A field holds a value its type does not allow.
        case invalidField = "TQ-WIRE-INVALID-FIELD"
        /// Bytes were left over after the message.
        case trailingBytes = "TQ-WIRE-TRAILING-BYTES"
    }

    /// What was wrong.
    public let code: Code
    /// Which field, or a short explanation. Never contains payload bytes.
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// The binary encoding of ``Message`` and its framing.
///
/// A frame is a 4-byte big-endian length followed by that many payload bytes,
/// at most 1 MiB. The payload is `version: u8 (= 2) || rackId: 16 bytes ||
/// tag: u8 || body`. Integers are big-endian; a platform id is two
/// length-prefixed (u8) UTF-8 strings; a share is `x: u8 || length: u16 ||
/// y`; a configuration is its epoch, rack id, coordinator, threshold, members
/// in platform-id order with their digests, and an optional encrypted chain;
/// an operator signature is `credential: u16-prefixed || signature:
/// u16-prefixed`; a ticket is its kind, rack id, epoch, coordinator, K, an
/// optional last committed epoch and its members in order (u16 count).
/// Version 2 added the operator's signatures: `Prepare` carries the signed
/// ticket, `CommitAdvance` and `Expunged` a signed configuration. A frame
/// of any other version is refused with ``WireError/Code/unsupportedVersion``,
/// naming both versions.
public enum WireFormat {
    /// The current version byte.
    public static let version: UInt8 = 2
    /// The largest payload a frame may carry: 1 MiB.
    public static let maximumFrameLength = 1 << 20

    enum Tag: UInt8 {
        case prepare = 1
        case prepareAck = 2
        case getShare = 3
        case share = 4
        case commitAdvance = 5
        case expunged = 6
        case getLrtqShare = 7
        case lrtqShare = 8
    }

    /// The largest share value a message can carry, in bytes.
    public static let maximumShareLength = Int(UInt16.max)

    /// The payload of `message`, without the frame header. A share longer
    /// than ``maximumShareLength`` is refused.
    public static func encodePayload(_ message: Message) throws(WireError) -> [UInt8] {
        switch message.kind {
        case .prepare(_, let share, _), .share(_, let share), .lrtqShare(let share):
            guard share.count <= maximumShareLength else {
                throw WireError(code: .invalidField, reason: "a share of \(share.count) bytes is too long to encode")
            }
        default:
            break
        }
        var writer = ByteWriter()
        writer.write(version)
        writer.write(message.rackId.bytes)
        switch message.kind {
        case .prepare(let config, let share, let ticket):
            writer.write(Tag.prepare.rawValue)
            writer.write(config)
            writer.write(share)
            writer.write(ticket.ticket)
            writer.write(ticket.signature)
        case .prepareAck(let epoch):
            writer.write(Tag.prepareAck.rawValue)
            writer.write(epoch.value)
        case .getShare(let epoch):
            writer.write(Tag.getShare.rawValue)
            writer.write(epoch.value)
        case .share(let epoch, let share):
            writer.write(Tag.share.rawValue)
            writer.write(epoch.value)
            writer.write(share)
        case .commitAdvance(let signed):
            writer.write(Tag.commitAdvance.rawValue)
            writer.write(signed.configuration)
            writer.write(signed.signature)
        case .expunged(let signed):
            writer.write(Tag.expunged.rawValue)
            writer.write(signed.configuration)
            writer.write(signed.signature)
        case .getLrtqShare:
            writer.write(Tag.getLrtqShare.rawValue)
        case .lrtqShare(let share):
            writer.write(Tag.lrtqShare.rawValue)
            writer.write(share)
        }
        return writer.bytes
    }

    /// The length of a frame header.
    public static let frameHeaderLength = 4

    /// The header of a frame whose payload is `length` bytes. This and
    /// ``payloadLength(header:)`` are the framing, used by
    /// ``encodeFrame(_:)`` and ``decodeFrame(_:)`` here and by the node's
    /// channel and admin-socket handlers alike.
    public static func frameHeader(payloadLength length: Int) throws(WireError) -> [UInt8] {
        try checkLength(length)
        return UInt32(length).bigEndianBytes
    }

    /// The payload length a frame announces in its first bytes, or `nil`
    /// if fewer than ``frameHeaderLength`` bytes have arrived. A length over
    /// ``maximumFrameLength`` is refused before anything is buffered for it.
    public static func payloadLength(header bytes: some Collection<UInt8>) throws(WireError) -> Int? {
        guard bytes.count >= frameHeaderLength else { return nil }
        let length = bytes.prefix(frameHeaderLength).reduce(0) { $0 << 8 | Int($1) }
        try checkLength(length)
        return length
    }

    private static func checkLength(_ length: Int) throws(WireError) {
        guard length <= maximumFrameLength else {
            throw WireError(code: .frameTooLarge, reason: "\(length) bytes, the limit is \(maximumFrameLength)")
        }
    }

    /// The frame of `message`: length prefix and payload. A payload over
    /// ``maximumFrameLength`` (a chain of about 26,000 epochs) is refused.
    public static func encodeFrame(_ message: Message) throws(WireError) -> [UInt8] {
        let payload = try encodePayload(message)
        return try frameHeader(payloadLength: payload.count) + payload
    }

    /// Decodes one payload (no frame header); every byte must be used.
    public static func decodePayload(_ bytes: some Collection<UInt8>) throws(WireError) -> Message {
        var reader = ByteReader(Array(bytes))
        let version = try reader.readUInt8("version")
        guard version == WireFormat.version else {
            throw WireError(
                code: .unsupportedVersion,
                reason:
                    "the peer speaks wire version \(version); this node speaks \(WireFormat.version) (run one release on every node)"
            )
        }
        let rackId = RackId(bytes: try reader.readBytes(RackId.byteCount, "rack id"))!
        let tagByte = try reader.readUInt8("tag")
        guard let tag = Tag(rawValue: tagByte) else {
            throw WireError(code: .unknownMessage, reason: "tag \(tagByte)")
        }
        let kind: Message.Kind
        switch tag {
        case .prepare:
            let config = try reader.readConfiguration()
            let share = try reader.readShare()
            let ticket = try reader.readTicket()
            kind = .prepare(config, share, SignedTicket(ticket, signature: try reader.readSignature()))
        case .prepareAck:
            kind = .prepareAck(Epoch(try reader.readUInt64("epoch")))
        case .getShare:
            kind = .getShare(Epoch(try reader.readUInt64("epoch")))
        case .share:
            let epoch = Epoch(try reader.readUInt64("epoch"))
            kind = .share(epoch, try reader.readShare())
        case .commitAdvance:
            let config = try reader.readConfiguration()
            kind = .commitAdvance(SignedConfiguration(config, signature: try reader.readSignature()))
        case .expunged:
            let config = try reader.readConfiguration()
            kind = .expunged(SignedConfiguration(config, signature: try reader.readSignature()))
        case .getLrtqShare:
            kind = .getLrtqShare
        case .lrtqShare:
            kind = .lrtqShare(try reader.readShare())
        }
        guard reader.isAtEnd else {
            throw WireError(code: .trailingBytes, reason: "\(reader.remaining) bytes after the message")
        }
        return Message(rackId: rackId, kind: kind)
    }

    /// Decodes the first frame in `buffer`: the message and the number of
    /// bytes it used, or `nil` if the frame is not complete yet.
    public static func decodeFrame(_ buffer: some Collection<UInt8>) throws(WireError) -> (Message, Int)? {
        let bytes = Array(buffer)
        guard let length = try payloadLength(header: bytes) else { return nil }
        let end = frameHeaderLength + length
        guard bytes.count >= end else { return nil }
        return (try decodePayload(bytes[frameHeaderLength..<end]), end)
    }
}

/// Appends big-endian fields.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func write(_ value: UInt8) { bytes.append(value) }
    mutating func write(_ value: UInt16) { bytes += value.bigEndianBytes }
    mutating func write(_ value: UInt32) { bytes += value.bigEndianBytes }
    mutating func write(_ value: UInt64) { bytes += value.bigEndianBytes }
    mutating func write(_ value: [UInt8]) { bytes += value }

    mutating func write(_ string: String) {
        let utf8 = Array(string.utf8)
        write(UInt8(utf8.count))
        write(utf8)
    }

    mutating func write(_ id: PlatformId) {
        write(id.part)
        write(id.serial)
    }

    mutating func write(_ share: Share) {
        write(share.x)
        write(UInt16(share.y.count))
        share.y.withUnsafeBytes { bytes += $0 }
    }

    mutating func write(_ config: Configuration) {
        writeConfigurationBody(
            rackId: config.rackId,
            epoch: config.epoch,
            coordinator: config.coordinator,
            sortedMembers: config.sortedMembers,
            members: config.members,
            threshold: config.threshold,
            encryptedRackSecrets: config.encryptedRackSecrets
        )
    }

    mutating func write(_ signature: OperatorSignature) {
        write(UInt16(signature.credential.count))
        write(signature.credential)
        write(UInt16(signature.signature.count))
        write(signature.signature)
    }

    mutating func write(_ ticket: ReconfigureTicket) {
        write(ticket.kind == .reconfigure ? UInt8(1) : UInt8(2))
        write(ticket.rackId.bytes)
        write(ticket.epoch.value)
        write(ticket.coordinator)
        write(UInt8(clamping: ticket.threshold))
        if let last = ticket.lastCommittedEpoch {
            write(UInt8(1))
            write(last.value)
        } else {
            write(UInt8(0))
        }
        let sorted = ticket.members.sorted()
        write(UInt16(clamping: sorted.count))
        for member in sorted { write(member) }
    }

    mutating func writeConfigurationBody(
        rackId: RackId,
        epoch: Epoch,
        coordinator: PlatformId,
        sortedMembers: [PlatformId],
        members: [PlatformId: ShareDigest],
        threshold: Int,
        encryptedRackSecrets: EncryptedRackSecrets?
    ) {
        write(rackId.bytes)
        write(epoch.value)
        write(coordinator)
        write(UInt8(threshold))
        write(UInt8(sortedMembers.count))
        for member in sortedMembers {
            write(member)
            write(members[member]!.bytes)
        }
        if let chain = encryptedRackSecrets {
            write(UInt8(1))
            write(chain.salt)
            write(UInt32(chain.ciphertext.count))
            write(chain.ciphertext)
        } else {
            write(UInt8(0))
        }
    }
}

/// Reads big-endian fields, throwing ``WireError`` instead of trapping.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }
    var remaining: Int { bytes.count - offset }

    mutating func readBytes(_ count: Int, _ field: String) throws(WireError) -> [UInt8] {
        guard count >= 0, remaining >= count else { throw WireError(code: .truncated, reason: field) }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func readUInt8(_ field: String) throws(WireError) -> UInt8 {
        guard remaining >= 1 else { throw WireError(code: .truncated, reason: field) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readUInt16(_ field: String) throws(WireError) -> UInt16 {
        let raw = try readBytes(2, field)
        return UInt16(raw[0]) << 8 | UInt16(raw[1])
    }

    mutating func readUInt32(_ field: String) throws(WireError) -> UInt32 {
        try readBytes(4, field).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func readUInt64(_ field: String) throws(WireError) -> UInt64 {
        try readBytes(8, field).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func readString(_ field: String) throws(WireError) -> String {
        let length = Int(try readUInt8(field))
        let raw = try readBytes(length, field)
        guard length > 0, let text = String(validating: raw, as: UTF8.self) else {
            throw WireError(code: .invalidField, reason: "\(field) is empty or not UTF-8")
        }
        return text
    }

    mutating func readPlatformId() throws(WireError) -> PlatformId {
        PlatformId(part: try readString("platform id part"), serial: try readString("platform id serial"))
    }

    mutating func readShare() throws(WireError) -> Share {
        let x = try readUInt8("share x")
        let length = Int(try readUInt16("share length"))
        guard length > 0, remaining >= length else {
            throw WireError(code: length == 0 ? .invalidField : .truncated, reason: "share value")
        }
        let y = SecretBytes(bytes[offset..<(offset + length)])
        offset += length
        do {
            return try Share(x: x, y: y)
        } catch {
            throw WireError(code: .invalidField, reason: "share: \(error)")
        }
    }

    mutating func readSignature() throws(WireError) -> OperatorSignature {
        let credential = try readBytes(Int(try readUInt16("signature credential length")), "signature credential")
        let signature = try readBytes(Int(try readUInt16("signature length")), "signature")
        guard let value = OperatorSignature(credential: credential, signature: signature) else {
            throw WireError(
                code: .invalidField, reason: "an operator signature's credential or signature is empty or too long")
        }
        return value
    }

    mutating func readTicket() throws(WireError) -> ReconfigureTicket {
        let kindByte = try readUInt8("ticket kind")
        let rackId = RackId(bytes: try readBytes(RackId.byteCount, "ticket rack id"))!
        let epoch = Epoch(try readUInt64("ticket epoch"))
        let coordinator = try readPlatformId()
        let threshold = Int(try readUInt8("ticket threshold"))
        let flag = try readUInt8("ticket last committed flag")
        let last: Epoch?
        switch flag {
        case 0: last = nil
        case 1: last = Epoch(try readUInt64("ticket last committed epoch"))
        default: throw WireError(code: .invalidField, reason: "ticket last committed flag \(flag)")
        }
        let count = Int(try readUInt16("ticket member count"))
        guard count <= Shamir.maximumShares else {
            throw WireError(
                code: .invalidField, reason: "a ticket of \(count) members; at most \(Shamir.maximumShares)")
        }
        var members: [PlatformId] = []
        for _ in 0..<count {
            let id = try readPlatformId()
            if let previous = members.last, !(previous < id) {
                throw WireError(code: .invalidField, reason: "ticket members are not in strictly increasing order")
            }
            members.append(id)
        }
        switch kindByte {
        case 1:
            let request = ReconfigureRequest(
                rackId: rackId, epoch: epoch, lastCommittedEpoch: last, members: Set(members), threshold: threshold)
            return ReconfigureTicket(request, coordinator: coordinator)
        case 2:
            guard last == nil else {
                throw WireError(code: .invalidField, reason: "an upgrade ticket has no last committed epoch")
            }
            let request = UpgradeFromLrtqRequest(
                rackId: rackId, epoch: epoch, members: Set(members), threshold: threshold)
            return ReconfigureTicket(upgrade: request, coordinator: coordinator)
        default:
            throw WireError(code: .invalidField, reason: "ticket kind \(kindByte)")
        }
    }

    mutating func readConfiguration() throws(WireError) -> Configuration {
        let rackId = RackId(bytes: try readBytes(RackId.byteCount, "configuration rack id"))!
        let epoch = Epoch(try readUInt64("configuration epoch"))
        let coordinator = try readPlatformId()
        let threshold = Int(try readUInt8("threshold"))
        let count = Int(try readUInt8("member count"))
        var members: [PlatformId: ShareDigest] = [:]
        var previous: PlatformId?
        for _ in 0..<count {
            let id = try readPlatformId()
            let digest = ShareDigest(bytes: try readBytes(32, "share digest"))!
            // Canonical: strictly increasing, so no duplicates and one encoding per value.
            if let previous, !(previous < id) {
                throw WireError(code: .invalidField, reason: "members are not in strictly increasing order")
            }
            previous = id
            members[id] = digest
        }
        let flag = try readUInt8("chain flag")
        var chain: EncryptedRackSecrets?
        switch flag {
        case 0: chain = nil
        case 1:
            let salt = try readBytes(EncryptedRackSecrets.saltByteCount, "chain salt")
            let length = Int(try readUInt32("chain length"))
            let ciphertext = try readBytes(length, "chain ciphertext")
            guard let value = EncryptedRackSecrets(salt: salt, ciphertext: ciphertext) else {
                throw WireError(code: .invalidField, reason: "chain ciphertext shorter than its tag")
            }
            chain = value
        default:
            throw WireError(code: .invalidField, reason: "chain flag \(flag)")
        }
        do {
            return try Configuration(
                rackId: rackId,
                epoch: epoch,
                coordinator: coordinator,
                members: members,
                threshold: threshold,
                encryptedRackSecrets: chain
            )
        } catch {
            throw WireError(code: .invalidField, reason: "configuration: \(error.description)")
        }
    }
}
