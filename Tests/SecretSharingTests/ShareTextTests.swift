import Testing

@testable import SecretSharing

@Suite("Share text")
struct ShareTextTests {
    @Test(
        "a bad line has its code and its reason names the line, never the value",
        arguments: [
            ("1:00ff\n2-00ff", ShareTextParseErrorCode.format), ("1:00ff\n2:", .format), ("1:00ff\n2:0g", .format),
            ("1:00ff\n0:00aa", .x), ("1:00ff\n256:00aa", .x), ("1:00ff\n1:00aa", .duplicate),
            ("1:00ff\n2:00", .length),
        ]
    )
    func bad(text: String, code: ShareTextParseErrorCode) {
        let error = #expect(throws: ShareText.ParseError.self) {
            try ShareText.parse(lines: text.split(separator: "\n", omittingEmptySubsequences: false))
        }
        #expect(error?.code == code)
        #expect(error?.reason.hasPrefix("line 2: ") == true)
        #expect(error.map { !"\($0)".contains("00ff") } == true)
    }
}
