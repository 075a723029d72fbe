import Attestation
import PropertyBased
import Testing

/// Random truncations and byte mutations of valid quotes never crash and
/// never verify.
@Suite("quote properties")
struct QuotePropertyTests {
    static let quote: [UInt8] = (try? TestData.bytes(TestData.v4Quote)) ?? []
    static let v5: [UInt8] = (try? TestData.bytes("tdx_v5_td15.quote")) ?? []
    static let collateral: Collateral? = try? TestData.collateral(TestData.v4Collateral)
    static let verifier = QuoteVerifier()

    @Test("truncations: parse fails (or, past the signature data, only padding is lost) and nothing verifies")
    func truncations() async throws {
        let collateral = try #require(Self.collateral)
        let quote = Self.quote
        let signatureEnd = try Quote(bytes: quote).bytes.count - Quote(bytes: quote).paddingLength
        await propertyCheck(count: 300, input: Gen.int(in: 0...(quote.count - 1))) { length in
            let truncated = Array(quote.prefix(length))
            if length < signatureEnd {
                #expect(throws: AttestationError.self) { try Quote(bytes: truncated) }
            }
            // Dropping only zero padding leaves a valid quote; anything shorter fails.
            if length < signatureEnd {
                #expect(throws: AttestationError.self) {
                    try Self.verifier.verify(quote: truncated, collateral: collateral, now: TestData.v4Now)
                }
            }
        }
        // v5 too (no padding).
        await propertyCheck(count: 100, input: Gen.int(in: 0...(Self.v5.count - 1))) { length in
            #expect(throws: AttestationError.self) { try Quote(bytes: Array(Self.v5.prefix(length))) }
        }
    }

    @Test("byte mutations anywhere up to the end of the signature data never verify")
    func mutations() async throws {
        let collateral = try #require(Self.collateral)
        let quote = Self.quote
        // Trailing bytes are tolerated (zero or not), and so are extra bytes
        // inside the signature data: a signature-data length grown into the
        // padding still verifies, as with both references. Those are left out.
        let signatureEnd = quote.count - (try Quote(bytes: quote)).paddingLength
        let lengthField = 632..<636
        let input = zip(Gen.int(in: 0...(signatureEnd - 1 - lengthField.count)), Gen.int(in: 1...255))
        await propertyCheck(count: 400, input: input) { index, delta in
            let offset = index < lengthField.lowerBound ? index : index + lengthField.count
            var mutated = quote
            mutated[offset] ^= UInt8(delta)
            #expect(throws: AttestationError.self, "offset \(offset) xor \(delta)") {
                try Self.verifier.verify(quote: mutated, collateral: collateral, now: TestData.v4Now)
            }
        }
    }

    @Test("several mutations at once, and random lengths, on v4 and v5, never crash the parser")
    func multipleMutations() async throws {
        let input = zip(Gen.uint64(), Gen.int(in: 1...16), Gen.int(in: 0...1))
        await propertyCheck(count: 300, input: input) { seed, count, which in
            var state = seed | 1
            func next() -> Int {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                return Int(truncatingIfNeeded: state >> 1)
            }
            var bytes = which == 0 ? Self.quote : Self.v5
            for _ in 0..<count {
                bytes[next() % bytes.count] = UInt8(truncatingIfNeeded: next())
            }
            bytes = Array(bytes.prefix(next() % (bytes.count + 1)))
            if let quote = try? Quote(bytes: bytes) {
                // Whatever parses is internally consistent.
                #expect(quote.signedLength <= quote.bytes.count)
                #expect(quote.report.bytes.count == quote.report.kind.size)
            }
        }
    }
}
