import KeyrackCore
import Testing

@testable import SecretSharing

/// The obviously correct multiply: schoolbook carry-less product of the two
/// polynomials, then long division by x⁸ + x⁴ + x³ + x + 1.
func referenceMultiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
    var product: UInt16 = 0
    for bit in 0..<8 where (b >> bit) & 1 == 1 {
        product ^= UInt16(a) << bit
    }
    for bit in stride(from: 15, through: 8, by: -1) where (product >> bit) & 1 == 1 {
        product ^= 0x11B << (bit - 8)
    }
    return UInt8(product)
}

@Suite("GF(2^8) arithmetic")
struct GF256Tests {
    @Test("every one of the 65,536 products matches the reference, scalar and across lanes")
    func allProducts() {
        var mismatches = 0
        for a in 0...255 {
            // One vector multiply covers 32 values of b at once.
            for bStart in stride(from: 0, to: 256, by: 16) {
                var bs = GF256.Lanes()
                for lane in 0..<16 { bs[lane] = UInt8(bStart + lane) }
                let products = GF256.multiply(GF256.Lanes(repeating: UInt8(a)), bs)
                for lane in 0..<16 {
                    let b = UInt8(bStart + lane)
                    let expected = referenceMultiply(UInt8(a), b)
                    if products[lane] != expected { mismatches += 1 }
                    if GF256.multiply(UInt8(a), b) != expected { mismatches += 1 }
                }
            }
        }
        #expect(mismatches == 0)
    }

    @Test("the reference multiply agrees with known AES values")
    func referenceKnownValues() {
        // FIPS-197 section 4.2: {57} · {83} = {c1}, {57} · {13} = {fe}.
        #expect(referenceMultiply(0x57, 0x83) == 0xC1)
        #expect(referenceMultiply(0x57, 0x13) == 0xFE)
        #expect(GF256.multiply(0x57, 0x83) == 0xC1)
    }

    @Test("every non-zero element has an inverse, and zero maps to zero")
    func inverses() {
        var seen = Set<UInt8>()
        for a in 1...255 {
            let inverse = GF256.inverse(UInt8(a))
            #expect(referenceMultiply(UInt8(a), inverse) == 1, "inverse of \(a)")
            seen.insert(inverse)
        }
        #expect(seen.count == 255)
        #expect(GF256.inverse(0) == 0)
    }

    @Test("inverting across lanes equals inverting each element")
    func laneInverse() {
        var values = GF256.Lanes()
        for lane in 0..<16 { values[lane] = UInt8(lane * 7 + 3) }
        let inverses = GF256.inverse(values)
        for lane in 0..<16 {
            #expect(inverses[lane] == GF256.inverse(values[lane]))
        }
    }
}
