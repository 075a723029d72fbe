import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing
import TrustQuorum

@testable import NodeAgent

/// The `keyrack` LUKS2 token, the header metadata around it, and the check
/// of a header's binary copies.
@Suite("LUKS2 header: keyrack token, metadata, binary check")
struct KeyrackTokenTests {
    static let token = KeyrackToken(
        rackId: RackId(bytes: Array(0..<16))!, diskId: "data0", epoch: 7, keyslot: 3)

    static func object() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: token.json()) as? [String: Any])
    }

    @Test("what it writes is what cryptsetup stores, and reads back the same")
    func roundTrip() throws {
        #expect(
            String(decoding: Self.token.json(), as: UTF8.self)
                == #"{"disk_id":"data0","epoch":"7","keyrack_version":"2","keyslots":["3"],"rack_id":"000102030405060708090a0b0c0d0e0f","type":"keyrack"}"#
        )
        #expect(try KeyrackToken(object: Self.object()) == Self.token)
        #expect(Self.token.scheme == .platformBound)
        #expect(!Self.token.description.contains("rack_id"))
        // An earlier release's token (version 1: a disk-only key) still reads, as what it is.
        var earlier = try Self.object()
        earlier["keyrack_version"] = "1"
        let read = try KeyrackToken(object: earlier)
        #expect(read.scheme == .diskOnly)
        #expect(read.version == DiskKeyVersion(7, .diskOnly))
        var legacy = Self.token
        legacy.scheme = .diskOnly
        #expect(read == legacy)
        #expect(String(decoding: legacy.json(), as: UTF8.self).contains(#""keyrack_version":"1""#))
    }

    @Test(
        "anything not exactly as written is refused (the value as JSON; absent: removed)",
        arguments: [
            ("type", #""luks2""#, "type"), ("keyrack_version", #""3""#, "keyrack_version"),
            ("keyrack_version", #""02""#, "keyrack_version"),
            ("keyrack_version", "2", "keyrack_version"),
            ("keyrack_version", "absent", "keyrack_version"), ("keyslots", #"["1", "2"]"#, "keyslots"),
            ("keyslots", #"["32"]"#, "keyslots"), ("keyslots", #"["01"]"#, "keyslots"), ("keyslots", "[1]", "keyslots"),
            ("rack_id", #""00""#, "rack_id"), ("rack_id", #""000102030405060708090A0B0C0D0E0F""#, "rack_id"),
            ("disk_id", #""""#, "disk_id"), ("disk_id", "\"" + String(repeating: "d", count: 256) + "\"", "disk_id"),
            ("epoch", #""0""#, "epoch"), ("epoch", #""+3""#, "epoch"), ("epoch", #""07""#, "epoch"),
            ("epoch", "7", "epoch"),
            ("epoch", #""18446744073709551616""#, "epoch"), ("extra", #""x""#, "unknown field 'extra'"),
        ]
    )
    func strict(field: String, value: String, words: String) throws {
        var object = try Self.object()
        object[field] =
            value == "absent"
            ? nil : try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed)
        let error = #expect(throws: VolumeError.self) { try KeyrackToken(object: object) }
        #expect(error?.code == .header)
        #expect(error?.reason.contains(words) == true, "\(error?.reason ?? "")")
    }

    @Test("metadata: keyslots, keyrack and other tokens, free slots, and bindings that belong elsewhere refused")
    func metadata() throws {
        let json = """
            {"keyslots": {"0": {}, "3": {}}, "tokens": {
              "0": \(String(decoding: Self.token.json(), as: UTF8.self)),
              "1": {"type": "systemd-tpm2", "keyslots": ["0"]}}}
            """
        let metadata = try LuksMetadata(json: Array(json.utf8))
        #expect(metadata.keyslots == [0, 3])
        #expect(metadata.tokens[1] == .other(type: "systemd-tpm2"))
        #expect(metadata.freeKeyslot == 1)
        #expect(metadata.freeToken == 2)
        let bindings = try metadata.bindings(rack: Self.token.rackId, disk: "data0", latest: 7)
        #expect(bindings.map(\.id) == [0])
        for (rack, disk, latest, words) in [
            (RackId(bytes: [UInt8](repeating: 9, count: 16))!, "data0", Epoch(7), "another rack"),
            (Self.token.rackId, "data1", Epoch(7), "bound as disk 'data0'"),
            (Self.token.rackId, "data0", Epoch(6), "after this node's latest commit"),
        ] {
            let error = #expect(throws: VolumeError.self) {
                try metadata.bindings(rack: rack, disk: disk, latest: latest)
            }
            #expect(error?.code == .foreign)
            #expect(error?.reason.contains(words) == true)
        }
        // A keyrack token naming a keyslot not in use, and a malformed one, are errors (never skipped).
        let dangling = LuksMetadata(keyslots: [0], tokens: [0: .keyrack(Self.token)])
        #expect(throws: VolumeError.self) { try dangling.bindings(rack: Self.token.rackId, disk: "data0", latest: 7) }
        let malformed = #"{"keyslots": {}, "tokens": {"0": {"type": "keyrack", "keyslots": []}}}"#
        #expect(throws: VolumeError.self) { try LuksMetadata(json: Array(malformed.utf8)) }
    }

    @Test("the binary check: an intact header, either copy damaged, LUKS1, no header")
    func binaryCheck() throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let intact = try LuksHeaderCheck.read(image)
        #expect(intact.count >= 32 << 10)
        #expect(LuksHeaderCheck.check(intact) == .intact)
        for (offset, words) in [
            (5000, "primary header's checksum"), (16384 + 5000, "secondary header's checksum"),
            (16384, "secondary header's magic"),
        ] {
            var damaged = intact
            damaged[offset] ^= 0xff
            guard case .damaged(let why) = LuksHeaderCheck.check(damaged) else {
                Issue.record("byte \(offset) flipped and the header still passes")
                continue
            }
            #expect(why.contains(words), "\(why)")
        }
        #expect(
            LuksHeaderCheck.check(Array(intact.prefix(20000)))
                == .damaged("the device is shorter than its two header copies"))
        #expect(LuksHeaderCheck.check([UInt8](repeating: 0, count: 8192)) == .notLuks)
        var luks1 = intact
        luks1[7] = 1
        #expect(LuksHeaderCheck.check(luks1) == .luks1)
        let missing = #expect(throws: VolumeError.self) { try LuksHeaderCheck.read(fixture.path("absent.img")) }
        #expect(missing?.code == .deviceMissing)
    }
}
