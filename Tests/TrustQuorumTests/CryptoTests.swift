import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import TrustQuorum

@Suite("Key derivation and the rack-secret chain")
struct CryptoTests {
    struct Vector: Sendable, CustomTestStringConvertible {
        let name: String
        let ikm: String
        let salt: String
        let info: String
        let length: Int
        let okm: String
        var testDescription: String { name }
    }

    // RFC 5869, appendix A, test cases 1–3 (SHA-256).
    static let vectors: [Vector] = [
        Vector(
            name: "RFC 5869 A.1",
            ikm: String(repeating: "0b", count: 22),
            salt: "000102030405060708090a0b0c",
            info: "f0f1f2f3f4f5f6f7f8f9",
            length: 42,
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        ),
        Vector(
            name: "RFC 5869 A.2",
            ikm: (0x00...0x4f).map { UInt8($0) }.hexString,
            salt: (0x60...0xaf).map { UInt8($0) }.hexString,
            info: (0xb0...0xff).map { UInt8($0) }.hexString,
            length: 82,
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
                + "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
                + "cc30c58179ec3e87c14c01d5c1f3434f1d87"
        ),
        Vector(
            name: "RFC 5869 A.3",
            ikm: String(repeating: "0b", count: 22),
            salt: "",
            info: "",
            length: 42,
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        ),
    ]

    @Test("HKDF-SHA256 matches the RFC 5869 vectors", arguments: vectors)
    func hkdfVectors(_ vector: Vector) throws {
        let ikm = SecretBytes(try #require([UInt8](hex: vector.ikm)))
        let okm = KeyDerivation.hkdfSHA256(
            ikm: ikm,
            salt: try #require([UInt8](hex: vector.salt)),
            info: try #require([UInt8](hex: vector.info)),
            length: vector.length
        )
        #expect(okm.unsafeCopiedBytes.hexString == vector.okm)
    }

    static func secret(_ byte: UInt8) -> RackSecret { RackSecret(SecretBytes([UInt8](repeating: byte, count: 32)))! }
    static let rack = RackId(bytes: Array(0..<16))!

    static let platform = PlatformId(part: "913-0000019", serial: "sn-0001")

    static func hkdf(_ secret: UInt8, info: [UInt8]) -> [UInt8] {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: [UInt8](repeating: secret, count: 32)),
            salt: Array(SHA256.hash(data: Self.rack.bytes)),
            info: info,
            outputByteCount: 32
        ).withUnsafeBytes { Array($0) }
    }

    @Test(
        "disk keys: HKDF(ikm: secret, salt: SHA-256(rackId), info: \"keyrack-disk-v2\" || u16 len ‖ part || u16 len ‖ serial || diskId)"
    )
    func diskKey() {
        let key = DiskKey(
            secret: Self.secret(3), epoch: 7, rackId: Self.rack, platform: Self.platform, diskId: Array("u2-0".utf8))
        let info =
            Array("keyrack-disk-v2".utf8) + [0, 11] + Array("913-0000019".utf8) + [0, 7] + Array("sn-0001".utf8)
            + Array("u2-0".utf8)
        #expect(key.key.unsafeCopiedBytes == Self.hkdf(3, info: info))
        #expect(key.epoch == 7)
        #expect(key.scheme == .platformBound)
        #expect(key.version == DiskKeyVersion(7, .platformBound))
        let other = DiskKey(
            secret: Self.secret(3), epoch: 7, rackId: Self.rack, platform: Self.platform, diskId: Array("u2-1".utf8))
        #expect(other.key != key.key)
        let rotated = DiskKey(
            secret: Self.secret(4), epoch: 8, rackId: Self.rack, platform: Self.platform, diskId: Array("u2-0".utf8))
        #expect(rotated.key != key.key)
        // Another node's disk of the same name has another key (review L10), and the
        // length prefixes keep part and serial apart.
        for platform in [
            PlatformId(part: "913-0000019", serial: "sn-0002"), PlatformId(part: "913-000001", serial: "9sn-0001"),
        ] {
            let neighbour = DiskKey(
                secret: Self.secret(3), epoch: 7, rackId: Self.rack, platform: platform, diskId: Array("u2-0".utf8))
            #expect(neighbour.key != key.key)
        }
    }

    @Test("an earlier release's disk keys (scheme 1): info \"keyrack-disk-v1\" || diskId, the same on every node")
    func diskOnlyKey() {
        let key = DiskKey(
            secret: Self.secret(3), epoch: 7, rackId: Self.rack, platform: Self.platform, diskId: Array("u2-0".utf8),
            scheme: .diskOnly)
        #expect(key.key.unsafeCopiedBytes == Self.hkdf(3, info: Array("keyrack-disk-v1u2-0".utf8)))
        #expect(key.version == DiskKeyVersion(7, .diskOnly))
        #expect(DiskKeyVersion(7, .diskOnly) < DiskKeyVersion(7, .platformBound))
        #expect(DiskKeyVersion(7, .platformBound) < DiskKeyVersion(8, .diskOnly))
        #expect("\(key)" == "DiskKey(epoch: 7, v1, redacted)")
    }

    @Test("the chain key uses info \"keyrack-tq-v1-rack-secrets\" || rackId || epoch as big-endian u64")
    func chainKey() {
        let salt = [UInt8](repeating: 9, count: 32)
        let key = KeyDerivation.chainKey(secret: Self.secret(1), salt: salt, rackId: Self.rack, epoch: 0x0102)
        let info = Array("keyrack-tq-v1-rack-secrets".utf8) + Self.rack.bytes + [0, 0, 0, 0, 0, 0, 1, 2]
        let expected = KeyDerivation.hkdfSHA256(ikm: Self.secret(1).bytes, salt: salt, info: info, length: 32)
        #expect(key == expected)
    }

    @Test("the chain opens under the right secret only")
    func chainRoundTrip() throws {
        let secrets: [Epoch: RackSecret] = [1: Self.secret(1), 2: Self.secret(2), 5: Self.secret(5)]
        let salt = [UInt8](repeating: 4, count: 32)
        let sealed = RackSecretChain.seal(secrets, under: Self.secret(6), rackId: Self.rack, epoch: 6, salt: salt)
        let opened = try RackSecretChain.open(sealed, with: Self.secret(6), rackId: Self.rack, epoch: 6)
        #expect(opened == secrets)
        #expect(throws: RackSecretChainError(code: .authenticationFailed)) {
            try RackSecretChain.open(sealed, with: Self.secret(7), rackId: Self.rack, epoch: 6)
        }
        #expect(throws: RackSecretChainError(code: .authenticationFailed)) {
            try RackSecretChain.open(sealed, with: Self.secret(6), rackId: Self.rack, epoch: 5)
        }
        var tampered = sealed.ciphertext
        tampered[3] ^= 1
        #expect(throws: RackSecretChainError(code: .authenticationFailed)) {
            try RackSecretChain.open(
                EncryptedRackSecrets(salt: salt, ciphertext: tampered)!,
                with: Self.secret(6),
                rackId: Self.rack,
                epoch: 6
            )
        }
    }

    @Test("a rack secret is never all zero; random secrets differ")
    func rackSecretRules() {
        #expect(RackSecret(SecretBytes([UInt8](repeating: 0, count: 32))) == nil)
        #expect(RackSecret(SecretBytes([UInt8](repeating: 1, count: 31))) == nil)
        var random = SeededRandomSource(seed: 3)
        #expect(RackSecret.random(using: &random) != RackSecret.random(using: &random))
    }
}

@Suite("Platform ids")
struct PlatformIdTests {
    @Test("encode as {part, serial}, decode to an equal id with an equal hash")
    func codable() throws {
        let id = PlatformId(part: "913-0000019", serial: "BRM42220004")
        let data = try JSONEncoder().encode(id)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: String]
        #expect(object == ["part": "913-0000019", "serial": "BRM42220004"])
        let decoded = try JSONDecoder().decode(PlatformId.self, from: data)
        #expect(decoded == id)
        #expect(decoded.hashValue == id.hashValue)
        #expect(Set([id, decoded, PlatformId(part: "913-0000019", serial: "BRM42220005")]).count == 2)
        #expect(PlatformId(part: "a", serial: "bc") != PlatformId(part: "ab", serial: "c"))
    }
}
