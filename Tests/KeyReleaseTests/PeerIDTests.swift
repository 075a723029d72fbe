import Crypto
import Foundation
import KeyrackCore
import PropertyBased
import SecretSharing
import Testing

@testable import KeyRelease

struct PeerIDVectors: Decodable {
    struct Valid: Decodable {
        let seedHex: String
        let peerId: String
        let publicKeyRawHex: String
        let publicKeyProtobufHex: String
        let signatureOverNonceHex: String
    }
    struct Rejected: Decodable {
        let kind: String
        let peerId: String
    }
    let nonceHex: String
    let ed25519: [Valid]
    let rejected: [Rejected]

    static func load() throws -> PeerIDVectors {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(PeerIDVectors.self, from: sharedTestData("libp2p/peer_ids.json"))
    }
}

@Suite("libp2p peer ids (vectors from py-libp2p)")
struct PeerIDTests {
    @Test("every valid id decodes to its key, and its signature over the nonce verifies")
    func valid() throws {
        let vectors = try PeerIDVectors.load()
        #expect(vectors.ed25519.count == 4)
        let nonce = try #require([UInt8](hex: vectors.nonceHex))
        for vector in vectors.ed25519 {
            let id = try PeerID(vector.peerId)
            #expect(id.publicKey.rawRepresentation.hexString == vector.publicKeyRawHex)
            #expect(id.protobufPublicKey.hexString == vector.publicKeyProtobufHex)
            let signature = try #require([UInt8](hex: vector.signatureOverNonceHex))
            #expect(id.isValidSignature(signature, for: nonce))
            // A one-bit change in the nonce or the signature fails.
            #expect(!id.isValidSignature(signature, for: nonce.enumerated().map { $0 == 0 ? $1 ^ 1 : $1 }))
            #expect(!id.isValidSignature(signature.enumerated().map { $0 == 5 ? $1 ^ 1 : $1 }, for: nonce))
        }
    }

    @Test("a signature by another peer does not verify")
    func otherPeer() throws {
        let vectors = try PeerIDVectors.load()
        let nonce = try #require([UInt8](hex: vectors.nonceHex))
        let first = try PeerID(vectors.ed25519[0].peerId)
        let otherSignature = try #require([UInt8](hex: vectors.ed25519[1].signatureOverNonceHex))
        #expect(!first.isValidSignature(otherSignature, for: nonce))
    }

    @Test("our encoding of each seed's key gives the same id")
    func encoding() throws {
        for vector in try PeerIDVectors.load().ed25519 {
            let seed = try #require([UInt8](hex: vector.seedHex))
            let key = try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
            #expect(PeerID(publicKey: key.publicKey).string == vector.peerId)
        }
    }

    @Test("every rejected id is refused")
    func rejected() throws {
        let vectors = try PeerIDVectors.load()
        #expect(vectors.rejected.count == 5)
        for vector in vectors.rejected {
            #expect(throws: PeerIDError.self, "\(vector.kind)") { try PeerID(vector.peerId) }
        }
    }

    @Test("each refusal says why")
    func reasons() throws {
        let vectors = try PeerIDVectors.load()
        let byKind = Dictionary(uniqueKeysWithValues: vectors.rejected.map { ($0.kind, $0.peerId) })
        #expect(throws: PeerIDError.unsupportedKeyType(2)) {
            try PeerID(byKind["secp256k1 key (identity multihash, not Ed25519)"]!)
        }
        #expect(throws: PeerIDError.keyNotRecoverable) {
            try PeerID(byKind["RSA key (sha2-256 multihash: public key not recoverable)"]!)
        }
        #expect(throws: PeerIDError.notBase58) { try PeerID("12D3KooW0OIl") }
        #expect(throws: PeerIDError.empty) { try PeerID("") }
        #expect(throws: PeerIDError.malformedMultihash) {
            try PeerID(byKind["truncated Ed25519 id"]!)
        }
        #expect(throws: PeerIDError.tooLong(129)) { try PeerID(String(repeating: "1", count: 129)) }
        #expect(PeerIDError.keyNotRecoverable.description.contains("RSA"))
    }

    @Test("base58 round trips any bytes, leading zeros included")
    func base58() async {
        await propertyCheck(count: 300, input: Gen.uint8().array(of: 0...48)) { bytes in
            #expect(Base58.decode(Base58.encode(bytes)) == bytes)
        }
        #expect(Base58.encode([0, 0, 1]) == "112")
        #expect(Base58.decode("") == [])
    }

    @Test("random strings never crash the parser")
    func fuzz() async {
        let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0O+/")
        await propertyCheck(count: 500, input: Gen.int(in: 0..<alphabet.count).array(of: 0...80)) { indices in
            _ = try? PeerID(String(indices.map { alphabet[$0] }))
        }
    }
}
