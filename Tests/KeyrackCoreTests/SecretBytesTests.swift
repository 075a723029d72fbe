import Testing

@testable import KeyrackCore

@Suite("Secret values")
struct SecretBytesTests {
    @Test("description and debugDescription never show the bytes")
    func redacted() {
        let secret = SecretBytes([0xDE, 0xAD, 0xBE, 0xEF])
        for text in [secret.description, secret.debugDescription, "\(secret)", String(reflecting: secret)] {
            #expect(!text.lowercased().contains("dead"))
            #expect(!text.contains("222"))  // 0xDE in decimal
            #expect(text.contains("redacted"))
        }
    }

    @Test("equality compares contents and lengths")
    func equality() {
        #expect(SecretBytes([1, 2, 3]) == SecretBytes([1, 2, 3]))
        #expect(SecretBytes([1, 2, 3]) != SecretBytes([1, 2, 4]))
        #expect(SecretBytes([9, 2, 3]) != SecretBytes([1, 2, 3]))
        #expect(SecretBytes([1, 2]) != SecretBytes([1, 2, 3]))
        #expect(constantTimeEqual([UInt8](), [UInt8]()))
    }

    @Test("secureZero overwrites the buffer")
    func zeroing() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
        secureZero(buffer)
        #expect(buffer.allSatisfy { $0 == 0 })
    }

    @Test("hex round trips and refuses bad input")
    func hex() {
        let bytes: [UInt8] = Array(0...255)
        #expect([UInt8](hex: bytes.hexString) == bytes)
        #expect([UInt8](hex: "0aFf") == [0x0A, 0xFF])
        #expect([UInt8](hex: "abc") == nil)
        #expect([UInt8](hex: "zz") == nil)
        #expect([UInt8](hex: "0g") == nil)
        #expect([UInt8](hex: "/0") == nil)
        #expect([UInt8](hex: "") == [])
        #expect(SecretBytes(hex: "00ff")?.unsafeCopiedBytes == [0, 255])
        #expect(SecretBytes(hex: "0x") == nil)
    }
}
