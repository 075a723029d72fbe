import KeyrackCore
import Testing

@testable import SecretSharing

@Suite("Share redaction")
struct ShareRedactionTests {
    @Test("a share's description never shows its bytes, alone or in a collection")
    func redacted() throws {
        let share = try Share(x: 3, y: SecretBytes([0xDE, 0xAD, 0xBE, 0xEF]))
        #expect(!share.description.lowercased().contains("dead"))
        #expect(share.description.contains("redacted"))
        #expect(!"\([share])".lowercased().contains("dead"))
    }
}
