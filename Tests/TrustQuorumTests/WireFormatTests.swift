import Foundation
import KeyrackCore
import KeyrackTestSupport
import PropertyBased
import SecretSharing
import Testing

@testable import TrustQuorum

@Suite("Wire format and persistent state")
struct WireFormatTests {
    static let rack = RackId(bytes: Array(0..<16))!

    static func configuration(epoch: Epoch = 3, count: Int = 5, chain: Bool = true) -> Configuration {
        var members: [PlatformId: ShareDigest] = [:]
        for index in 0..<count {
            members[PlatformId(part: "913", serial: "S\(index)")] = ShareDigest(
                bytes: [UInt8](repeating: UInt8(index), count: 32)
            )!
        }
        return try! Configuration(
            rackId: rack,
            epoch: epoch,
            coordinator: PlatformId(part: "913", serial: "S0"),
            members: members,
            threshold: count / 2 + 1,
            encryptedRackSecrets: chain
                ? EncryptedRackSecrets(salt: [UInt8](repeating: 1, count: 32), ciphertext: Array(0..<56)) : nil
        )
    }

    static let share = try! Share(x: 2, y: SecretBytes(Array(100..<132)))

    static let ticket = TestOperator.ticket(
        ReconfigureRequest(
            rackId: rack, epoch: 3, lastCommittedEpoch: 2, members: Set(configuration().members.keys), threshold: 3),
        coordinator: PlatformId(part: "913", serial: "S0"))

    static let upgradeTicket: SignedTicket = {
        let ticket = ReconfigureTicket(
            upgrade: UpgradeFromLrtqRequest(
                rackId: rack, epoch: 3, members: Set(configuration().members.keys), threshold: 3),
            coordinator: PlatformId(part: "913", serial: "S0"))
        return SignedTicket(ticket, signature: try! TestOperator.key.sign(.ticket(ticket)))
    }()

    static let allMessages: [Message] = [
        .prepare(configuration(), share, ticket), .prepare(configuration(), share, upgradeTicket), .prepareAck(3),
        .getShare(3), .share(3, share), .commitAdvance(TestOperator.signed(configuration(chain: false))),
        .expunged(TestOperator.signed(configuration(epoch: 9))), .getLrtqShare, .lrtqShare(share),
    ].map { Message(rackId: rack, kind: $0) }

    @Test("every message survives a frame round trip")
    func roundTrip() throws {
        for message in Self.allMessages {
            let frame = try WireFormat.encodeFrame(message)
            let decoded = try #require(try WireFormat.decodeFrame(frame))
            #expect(decoded.0 == message)
            #expect(decoded.1 == frame.count)
            #expect(Int(frame[0]) << 24 | Int(frame[1]) << 16 | Int(frame[2]) << 8 | Int(frame[3]) == frame.count - 4)
        }
    }

    /// A ticket's wire bytes, field by field, so each can be made wrong.
    static func ticketBytes(
        kind: UInt8 = 1, flag: UInt8 = 0, members: [PlatformId], count: UInt16? = nil
    ) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(kind)
        writer.write(rack.bytes)
        writer.write(UInt64(3))
        writer.write(PlatformId(part: "913", serial: "S0"))
        writer.write(UInt8(3))
        writer.write(flag)
        if flag == 1 { writer.write(UInt64(2)) }
        writer.write(count ?? UInt16(members.count))
        for member in members { writer.write(member) }
        return writer.bytes
    }

    @Test("a malformed ticket or operator signature is refused with the field named")
    func ticketAndSignatureErrors() throws {
        let members = Self.configuration().sortedMembers
        func ticketCode(_ bytes: [UInt8]) -> WireError.Code? {
            var reader = ByteReader(bytes)
            do {
                _ = try reader.readTicket()
                return nil
            } catch {
                return error.code
            }
        }
        var reader = ByteReader(Self.ticketBytes(flag: 1, members: members))
        #expect(try reader.readTicket() == Self.ticket.ticket)
        #expect(ticketCode(Self.ticketBytes(kind: 2, members: members)) == nil)
        #expect(ticketCode(Self.ticketBytes(kind: 9, members: members)) == .invalidField)
        #expect(ticketCode(Self.ticketBytes(flag: 2, members: members)) == .invalidField)
        #expect(ticketCode(Self.ticketBytes(kind: 2, flag: 1, members: members)) == .invalidField)
        #expect(ticketCode(Self.ticketBytes(members: members, count: 300)) == .invalidField)
        #expect(ticketCode(Self.ticketBytes(members: members.reversed())) == .invalidField)
        #expect(ticketCode(Array(Self.ticketBytes(members: members).dropLast())) == .truncated)
        func signatureCode(credential: Int, signature: Int) -> WireError.Code? {
            var writer = ByteWriter()
            writer.write(UInt16(credential))
            writer.write([UInt8](repeating: 1, count: credential))
            writer.write(UInt16(signature))
            writer.write([UInt8](repeating: 2, count: signature))
            var reader = ByteReader(writer.bytes)
            do {
                _ = try reader.readSignature()
                return nil
            } catch {
                return error.code
            }
        }
        #expect(signatureCode(credential: 32, signature: 64) == nil)
        #expect(signatureCode(credential: 0, signature: 64) == .invalidField)
        #expect(signatureCode(credential: 32, signature: 0) == .invalidField)
        #expect(
            signatureCode(credential: OperatorSignature.maximumCredentialLength + 1, signature: 64) == .invalidField)
        #expect(signatureCode(credential: 32, signature: OperatorSignature.maximumSignatureLength + 1) == .invalidField)
    }

    @Test("a message larger than a frame is refused when encoding")
    func oversizeEncode() {
        let huge = try! Configuration(
            rackId: Self.rack,
            epoch: 1,
            coordinator: PlatformId(part: "913", serial: "S0"),
            members: Self.configuration().members,
            threshold: 2,
            encryptedRackSecrets: EncryptedRackSecrets(
                salt: [UInt8](repeating: 0, count: 32),
                ciphertext: [UInt8](repeating: 0, count: WireFormat.maximumFrameLength)
            )
        )
        #expect(throws: WireError.self) {
            try WireFormat.encodeFrame(Message(rackId: Self.rack, kind: .commitAdvance(TestOperator.signed(huge))))
        }
    }

    @Test("a share too long for its length field is refused when encoding")
    func oversizeShare() throws {
        let long = try Share(x: 1, y: SecretBytes([UInt8](repeating: 1, count: WireFormat.maximumShareLength + 1)))
        #expect(throws: WireError.self) {
            try WireFormat.encodePayload(Message(rackId: Self.rack, kind: .lrtqShare(long)))
        }
    }

    @Test("an incomplete frame is not an error, just not ready")
    func incompleteFrame() throws {
        let frame = try WireFormat.encodeFrame(Self.allMessages[0])
        for cut in [0, 3, 4, frame.count - 1] { #expect(try WireFormat.decodeFrame(frame.prefix(cut)) == nil) }
    }

    @Test("the framing the node's NIO handlers use: header of a length, length of a header, 1 MiB at most")
    func framing() throws {
        let limit = WireFormat.maximumFrameLength
        #expect(try WireFormat.frameHeader(payloadLength: 0) == [0, 0, 0, 0])
        #expect(try WireFormat.frameHeader(payloadLength: limit) == [0x00, 0x10, 0x00, 0x00])
        #expect(throws: WireError(code: .frameTooLarge, reason: "\(limit + 1) bytes, the limit is \(limit)")) {
            try WireFormat.frameHeader(payloadLength: limit + 1)
        }
        #expect(try WireFormat.payloadLength(header: [0x00, 0x00, 0x01]) == nil)
        #expect(try WireFormat.payloadLength(header: [0x00, 0x00, 0x01, 0x02, 0xff]) == 258)
        #expect(try WireFormat.payloadLength(header: [0x00, 0x10, 0x00, 0x00]) == limit)
        #expect(throws: WireError(code: .frameTooLarge, reason: "\(limit + 1) bytes, the limit is \(limit)")) {
            try WireFormat.payloadLength(header: [0x00, 0x10, 0x00, 0x01])
        }
        let frame = try WireFormat.encodeFrame(Self.allMessages[0])
        #expect(try WireFormat.payloadLength(header: frame) == frame.count - WireFormat.frameHeaderLength)
    }

    @Test("typed errors: too large, version, unknown tag, trailing bytes, truncation, non-canonical members")
    func typedErrors() throws {
        #expect(throws: WireError.self) { try WireFormat.decodeFrame([0x00, 0x10, 0x00, 0x01]) }
        do {
            _ = try WireFormat.decodeFrame([0x00, 0x10, 0x00, 0x01])
        } catch {
            #expect(error.code == .frameTooLarge)
        }
        var payload = try! WireFormat.encodePayload(Self.allMessages[1])
        func code(_ bytes: [UInt8]) -> WireError.Code? {
            do {
                _ = try WireFormat.decodePayload(bytes)
                return nil
            } catch {
                return error.code
            }
        }
        #expect(code(payload) == nil)
        #expect(code([1] + payload.dropFirst()) == .unsupportedVersion)
        #expect(code([3] + payload.dropFirst()) == .unsupportedVersion)
        do {
            _ = try WireFormat.decodePayload([1] + payload.dropFirst())
            Issue.record("a version-1 frame decoded")
        } catch {
            #expect(
                error.reason == "the peer speaks wire version 1; this node speaks 2 (run one release on every node)")
        }
        payload[17] = 200
        #expect(code(payload) == .unknownMessage)
        #expect(code(try! WireFormat.encodePayload(Self.allMessages[1]) + [0]) == .trailingBytes)
        #expect(code(Array(try! WireFormat.encodePayload(Self.allMessages[1]).dropLast())) == .truncated)
        // Swap the first two members of a Prepare: no longer strictly increasing.
        let prepare = try! WireFormat.encodePayload(Self.allMessages[0])
        var reader = prepare
        let memberStart = 1 + 16 + 1 + 16 + 8 + (1 + 3 + 1 + 2) + 1 + 1
        let memberLength = 1 + 3 + 1 + 2 + 32
        let first = Array(reader[memberStart..<(memberStart + memberLength)])
        let second = Array(reader[(memberStart + memberLength)..<(memberStart + 2 * memberLength)])
        reader.replaceSubrange(memberStart..<(memberStart + 2 * memberLength), with: second + first)
        #expect(code(reader) == .invalidField)
        // Threshold 0 is refused by the configuration's rules.
        var badThreshold = prepare
        badThreshold[memberStart - 2] = 0
        #expect(code(badThreshold) == .invalidField)
    }

    @Test("garbage never crashes the decoder: random bytes, truncations and bit flips")
    func fuzz() {
        var random = SeededRandomSource(seed: 2024)
        let frames = Self.allMessages.map { try! WireFormat.encodeFrame($0) }
        var decodedOK = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0:
                bytes = random.bytes(Int(random.next() % 200))
            case 1:
                let frame = frames[Int(random.next() % UInt64(frames.count))]
                bytes = Array(frame.prefix(Int(random.next() % UInt64(frame.count + 1))))
            default:
                bytes = frames[Int(random.next() % UInt64(frames.count))]
                for _ in 0..<(1 + random.next() % 4) {
                    bytes[Int(random.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                }
            }
            if (try? WireFormat.decodeFrame(bytes)) != nil { decodedOK += 1 }
            if (try? WireFormat.decodePayload(bytes)) != nil { decodedOK += 1 }
        }
        // Some flips land in share values and still decode; most inputs must not.
        #expect(decodedOK < 20_000)
    }

    @Test("property: configurations of any size round-trip through the wire and JSON")
    func configurationProperty() async {
        await propertyCheck(count: 100, input: Gen.int(in: 2...255), Gen.uint64()) { count, epoch in
            var members: [PlatformId: ShareDigest] = [:]
            for index in 0..<count {
                members[PlatformId(part: "p\(index % 7)", serial: "s\(index)")] = ShareDigest(
                    bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: index &* 31), count: 32)
                )!
            }
            let config = try! Configuration(
                rackId: Self.rack,
                epoch: Epoch(epoch),
                coordinator: members.keys.min()!,
                members: members,
                threshold: max(2, count / 2),
                encryptedRackSecrets: nil
            )
            let message = Message(rackId: Self.rack, kind: .commitAdvance(TestOperator.signed(config)))
            let decoded = try? WireFormat.decodePayload(try! WireFormat.encodePayload(message))
            #expect(decoded == message)
            let json = try! JSONEncoder().encode(config)
            #expect((try? JSONDecoder().decode(Configuration.self, from: json)) == config)
            #expect(config.xCoordinate(of: config.sortedMembers[count - 1]) == UInt8(count))
        }
    }

    @Test("persistent state round-trips through JSON and refuses other versions")
    func persistentState() throws {
        var state = PersistentState.empty
        state.configurations[3] = Self.configuration()
        state.shares[3] = Self.share
        state.committedEpochs = [1, 3]
        state.expunged = ExpungedMetadata(epoch: 4, from: PlatformId(part: "913", serial: "S1"))
        state.commitSignatures[3] = TestOperator.signed(Self.configuration()).signature
        state.tickets[3] = Self.ticket
        let data = try JSONEncoder().encode(state)
        #expect(try JSONDecoder().decode(PersistentState.self, from: data) == state)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"version\":2"))
        let newer = text.replacingOccurrences(of: "\"version\":2", with: "\"version\":3")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(PersistentState.self, from: Data(newer.utf8)) }
        // A version-1 state (before signatures) still loads, its commits unsigned.
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        object["version"] = 1
        object["commitSignatures"] = nil
        object["tickets"] = nil
        let old = try JSONDecoder().decode(PersistentState.self, from: JSONSerialization.data(withJSONObject: object))
        var expected = state
        expected.commitSignatures = [:]
        expected.tickets = [:]
        #expect(old == expected)
        #expect(old.latestSignedConfiguration == nil)
        #expect(state.latestSignedConfiguration == TestOperator.signed(Self.configuration()))
    }

    @Test("configuration rules are enforced at construction")
    func configurationRules() {
        let members = Self.configuration().members
        let coordinator = PlatformId(part: "913", serial: "S0")
        func code(_ build: () throws -> Configuration) -> ConfigurationError.Code? {
            do {
                _ = try build()
                return nil
            } catch {
                return (error as? ConfigurationError)?.code
            }
        }
        #expect(
            code {
                try Configuration(
                    rackId: Self.rack,
                    epoch: 1,
                    coordinator: coordinator,
                    members: members,
                    threshold: 1,
                    encryptedRackSecrets: nil
                )
            } == .thresholdOutOfRange
        )
        #expect(
            code {
                try Configuration(
                    rackId: Self.rack,
                    epoch: 1,
                    coordinator: PlatformId(part: "x", serial: "y"),
                    members: members,
                    threshold: 2,
                    encryptedRackSecrets: nil
                )
            } == .coordinatorNotMember
        )
        #expect(
            code {
                try Configuration(
                    rackId: Self.rack,
                    epoch: 1,
                    coordinator: coordinator,
                    members: [coordinator: members[coordinator]!],
                    threshold: 2,
                    encryptedRackSecrets: nil
                )
            } == .memberCountOutOfRange
        )
    }
}
