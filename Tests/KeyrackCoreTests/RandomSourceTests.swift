import Testing

@testable import KeyrackCore

@Suite("Random sources")
struct RandomSourceTests {
    @Test("the seeded source is the ChaCha20 keystream (RFC 8439 appendix A.1, test vector 1)")
    func chachaVector() {
        var source = SeededRandomSource(key: [UInt8](repeating: 0, count: 32))
        let expected =
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            + "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
        #expect(source.bytes(64).hexString == expected)
    }

    @Test("the same seed gives the same stream; another seed another stream")
    func determinism() {
        var a = SeededRandomSource(seed: 42)
        var b = SeededRandomSource(seed: 42)
        var c = SeededRandomSource(seed: 43)
        let first = a.bytes(100)
        #expect(first == b.bytes(100))
        #expect(first != c.bytes(100))
    }

    @Test("requests of odd sizes continue the same stream")
    func chunking() {
        var whole = SeededRandomSource(seed: 7)
        var pieces = SeededRandomSource(seed: 7)
        let expected = whole.bytes(200)
        let got = pieces.bytes(3) + pieces.bytes(61) + pieces.bytes(1) + pieces.bytes(135)
        #expect(got == expected)
    }

    @Test("the system source fills the whole buffer")
    func system() {
        var source = SystemRandomSource()
        // 4096 bytes that stay all zero would mean the buffer was not filled.
        let bytes = source.bytes(4096)
        #expect(bytes.count == 4096)
        #expect(Set(bytes).count > 200)
    }
}
