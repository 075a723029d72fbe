import KeyrackCore
import PropertyBased
import Testing

@testable import SecretSharing

/// (K, N, length, seed) with 2 ≤ K ≤ N ≤ 60 and a length of 1…600 bytes.
let parameters = zip(Gen.int(in: 2...60), Gen.int(in: 2...60), Gen.int(in: 1...600), Gen.uint64())
    .map { a, b, length, seed in (min(a, b), max(a, b), length, seed) }

/// A random secret of `length` bytes split (K, N) with a stream seeded by
/// `seed`, and the stream to draw further choices from.
func splitFixture(
    _ k: Int,
    _ n: Int,
    _ length: Int,
    _ seed: UInt64
) -> (random: SeededRandomSource, secret: SecretBytes, shares: [Share]) {
    var random = SeededRandomSource(seed: seed)
    let secret = random.secretBytes(length)
    let shares = try! Shamir.split(secret, threshold: k, shares: n, using: &random)
    return (random, secret, shares)
}

@Suite("Shamir secret sharing")
struct ShamirTests {
    @Test("any K of N shares, in any order, give back the secret")
    func anyKShares() async {
        await propertyCheck(count: 60, input: parameters) { k, n, length, seed in
            let fixture = splitFixture(k, n, length, seed)
            var random = fixture.random
            let (secret, shares) = (fixture.secret, fixture.shares)
            #expect(shares.count == n)
            #expect(shares.map(\.x) == (1...n).map { UInt8($0) })
            let subset = Array(shares.shuffled(using: &random).prefix(k))
            #expect((try? Shamir.combine(subset, threshold: k)) == secret)
        }
    }

    @Test("more than K shares also give back the secret, and are cross-checked")
    func moreThanK() async {
        await propertyCheck(count: 40, input: parameters) { k, n, length, seed in
            let fixture = splitFixture(k, n, length, seed)
            var random = fixture.random
            let (secret, shares) = (fixture.secret, fixture.shares)
            let extra = Int.random(in: k...n, using: &random)
            let subset = Array(shares.shuffled(using: &random).prefix(extra))
            #expect((try? Shamir.combine(subset, threshold: k)) == secret)
        }
    }

    @Test("recompute(at:) gives the share the member had")
    func recompute() async {
        await propertyCheck(count: 60, input: parameters) { k, n, length, seed in
            let fixture = splitFixture(k, n, length, seed)
            var random = fixture.random
            let shares = fixture.shares
            let shuffled = shares.shuffled(using: &random)
            let basis = Array(shuffled.prefix(k))
            // A member outside the basis when there is one, else one inside.
            let lost = shuffled[k % n]
            let rebuilt = try! Shamir.recompute(at: lost.x, from: basis, threshold: k)
            #expect(rebuilt == lost)
            #expect(rebuilt.digest == lost.digest)
            #expect(lost.digest.matches(rebuilt))
        }
    }

    @Test("recompute(at:) for a coordinate beyond N gives a share that works with the others")
    func recomputeNewMember() throws {
        var random = SeededRandomSource(seed: 5)
        let secret = random.secretBytes(32)
        let shares = try Shamir.split(secret, threshold: 3, shares: 5, using: &random)
        let newcomer = try Shamir.recompute(at: 200, from: Array(shares.prefix(3)), threshold: 3)
        #expect(newcomer.x == 200)
        #expect(try Shamir.combine([newcomer, shares[3], shares[4]], threshold: 3) == secret)
    }

    @Test("secrets from 1 byte to 64 KiB")
    func lengths() throws {
        var random = SeededRandomSource(seed: 99)
        for length in [1, 2, 31, 32, 33, 63, 64, 65, 1000, 65_536] {
            let secret = random.secretBytes(length)
            let shares = try Shamir.split(secret, threshold: 3, shares: 4, using: &random)
            #expect(shares.allSatisfy { $0.count == length })
            #expect(try Shamir.combine([shares[3], shares[1], shares[0]], threshold: 3) == secret)
        }
    }

    @Test("the extreme sizes: N = 255 with K = 2 and K = 255")
    func extremes() throws {
        var random = SeededRandomSource(seed: 1)
        let secret = random.secretBytes(40)
        for k in [2, 255] {
            let shares = try Shamir.split(secret, threshold: k, shares: 255, using: &random)
            let subset = Array(shares.shuffled(using: &random).prefix(k))
            #expect((try? Shamir.combine(subset, threshold: k)) == secret)
            #expect(try Shamir.recompute(at: 255, from: Array(shares.prefix(k)), threshold: k) == shares[254])
        }
    }

    @Test("the same seed gives the same shares")
    func deterministic() throws {
        var a = SeededRandomSource(seed: 3)
        var b = SeededRandomSource(seed: 3)
        let secret = SecretBytes([1, 2, 3])
        #expect(
            try Shamir.split(secret, threshold: 2, shares: 3, using: &a)
                == Shamir.split(secret, threshold: 2, shares: 3, using: &b)
        )
    }

    @Test("a share's digest is SHA-256 of x ‖ y and changes with either")
    func digests() throws {
        let share = try Share(x: 1, y: SecretBytes([0xAB]))
        // SHA-256 of the two bytes 01 ab.
        #expect(share.digest.hex == "f2e97756070035a94e7ef9e9e2424b4eaeb1b62d6e3d544f8d6b04cffcdb37fa")
        let sameY = try Share(x: 2, y: SecretBytes([0xAB]))
        let sameX = try Share(x: 1, y: SecretBytes([0xAC]))
        #expect(share.digest != sameY.digest)
        #expect(share.digest != sameX.digest)
        #expect(!share.digest.matches(sameX))
        #expect(share.digest.matches(try Share(x: 1, y: SecretBytes([0xAB]))))
    }
}

@Suite("Shamir errors")
struct ShamirErrorTests {
    let secret = SecretBytes([1, 2, 3, 4])

    @Test("K or N out of range", arguments: [(1, 3), (0, 3), (4, 3), (2, 256), (2, 1), (300, 300), (2, 0)])
    func ranges(k: Int, n: Int) {
        #expect(throws: SecretSharingError.self) {
            try Shamir.split(secret, threshold: k, shares: n)
        }
    }

    @Test("the range errors say which number is wrong")
    func rangeCases() {
        #expect(throws: SecretSharingError.thresholdOutOfRange(threshold: 1, shares: 3)) {
            try Shamir.split(secret, threshold: 1, shares: 3)
        }
        #expect(throws: SecretSharingError.thresholdOutOfRange(threshold: 4, shares: 3)) {
            try Shamir.split(secret, threshold: 4, shares: 3)
        }
        #expect(throws: SecretSharingError.shareCountOutOfRange(shares: 256)) {
            try Shamir.split(secret, threshold: 2, shares: 256)
        }
        #expect(throws: SecretSharingError.shareCountOutOfRange(shares: 1)) {
            try Shamir.split(secret, threshold: 2, shares: 1)
        }
    }

    @Test("an empty secret")
    func empty() {
        #expect(throws: SecretSharingError.emptySecret) {
            try Shamir.split(SecretBytes([]), threshold: 2, shares: 3)
        }
        #expect(throws: SecretSharingError.emptySecret) { try Share(x: 1, y: SecretBytes([])) }
    }

    @Test("fewer than K shares")
    func tooFew() throws {
        let shares = try Shamir.split(secret, threshold: 3, shares: 5)
        #expect(throws: SecretSharingError.notEnoughShares(have: 2, need: 3)) {
            try Shamir.combine(Array(shares.prefix(2)), threshold: 3)
        }
        #expect(throws: SecretSharingError.notEnoughShares(have: 2, need: 3)) {
            try Shamir.recompute(at: 9, from: Array(shares.prefix(2)), threshold: 3)
        }
        #expect(throws: SecretSharingError.thresholdOutOfRange(threshold: 1, shares: 2)) {
            try Shamir.combine(Array(shares.prefix(2)), threshold: 1)
        }
    }

    @Test("duplicate x-coordinates")
    func duplicates() throws {
        let shares = try Shamir.split(secret, threshold: 2, shares: 3)
        #expect(throws: SecretSharingError.duplicateCoordinate(x: 1)) {
            try Shamir.combine([shares[0], shares[0]], threshold: 2)
        }
        #expect(throws: SecretSharingError.duplicateCoordinate(x: 2)) {
            try Shamir.recompute(at: 3, from: [shares[1], shares[0], shares[1]], threshold: 2)
        }
    }

    @Test("x = 0")
    func zeroX() throws {
        #expect(throws: SecretSharingError.zeroCoordinate) { try Share(x: 0, y: SecretBytes([1])) }
        let shares = try Shamir.split(secret, threshold: 2, shares: 3)
        #expect(throws: SecretSharingError.zeroCoordinate) {
            try Shamir.recompute(at: 0, from: shares, threshold: 2)
        }
    }

    @Test("shares of different lengths")
    func lengths() throws {
        let a = try Share(x: 1, y: SecretBytes([1, 2, 3, 4]))
        let b = try Share(x: 2, y: SecretBytes([1, 2, 3]))
        #expect(throws: SecretSharingError.lengthMismatch(expected: 4, found: 3, x: 2)) {
            try Shamir.combine([a, b], threshold: 2)
        }
    }

    @Test("a wrong share among more than K is caught")
    func inconsistent() throws {
        var random = SeededRandomSource(seed: 11)
        let shares = try Shamir.split(secret, threshold: 3, shares: 5, using: &random)
        var bytes = shares[4].y.unsafeCopiedBytes
        bytes[2] ^= 1
        let forged = try Share(x: 5, y: SecretBytes(bytes))
        #expect(throws: SecretSharingError.inconsistentShares(x: 5)) {
            try Shamir.combine(Array(shares.prefix(4)) + [forged], threshold: 3)
        }
        // A forged share among the first K makes the honest extras disagree.
        #expect(throws: SecretSharingError.inconsistentShares(x: 4)) {
            try Shamir.combine([forged, shares[0], shares[1], shares[3]], threshold: 3)
        }
    }

    @Test("every error reads as a sentence without secret bytes")
    func messages() {
        let errors: [SecretSharingError] = [
            .thresholdOutOfRange(threshold: 1, shares: 3), .shareCountOutOfRange(shares: 256),
            .notEnoughShares(have: 1, need: 2), .duplicateCoordinate(x: 4), .zeroCoordinate,
            .lengthMismatch(expected: 3, found: 2, x: 9), .emptySecret, .inconsistentShares(x: 3),
        ]
        for error in errors {
            #expect(error.description.count > 10)
        }
    }
}
