import Foundation
import Logging
import Testing

@testable import KeyRelease
@testable import KeyReleaseServer

#if canImport(Glibc)
    import Glibc
#endif

@Suite("The API's flat JSON fast path, and the background log writer")
struct WireFormatTests {
    @Test("encoding matches JSONEncoder (sorted keys, slashes unescaped), escapes included")
    func encodingMatchesJSONEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let awkward = "a/b+c=\"q\"\\ \n\r\t\u{08}\u{0C}\u{01}\u{1F} é 🔑"
        let messages: [any FlatJSONMessage] = [
            ChallengeRequest(peerId: awkward),
            ChallengeResponse(challengeId: "id", nonce: awkward, expiresAt: "2026-11-21T06:42:14.123Z"),
            GetKeyRequest(challengeId: awkward, quote: "AAAA/+==", signature: "x"),
            GetKeyResponse(key: awkward),
        ]
        for message in messages {
            let expected = String(decoding: try encoder.encode(message), as: UTF8.self)
            #expect(String(decoding: message.flatJSON, as: UTF8.self) == expected)
        }
    }

    @Test("decoding: what it reads agrees with JSONDecoder, and it declines everything else")
    func decoding() throws {
        let request = GetKeyRequest(challengeId: "c", quote: "q/+=", signature: "s")
        let read = try #require(GetKeyRequest(flatJSON: request.flatJSON))
        #expect(read.challengeId == "c" && read.quote == "q/+=" && read.signature == "s")
        let spaced = Array(#" { "peerId" : "12D3KooW" , "extra" : "x" } "#.utf8)
        #expect(ChallengeRequest(flatJSON: spaced)?.peerId == "12D3KooW")
        #expect(try JSONDecoder().decode(ChallengeRequest.self, from: Data(spaced)).peerId == "12D3KooW")
        #expect(FlatJSON.decode(Array("{}".utf8)) == [:])

        // Declined: JSONDecoder decides (and words the error).
        let declined = [
            #"{"peerId":"a\/b"}"#,  // an escape
            #"{"peerId":1}"#,  // not a string
            #"{"peerId":"a","peerId":"b"}"#,  // a repeated key
            #"{"peerId":"a"} x"#,  // trailing text
            #"{"peerId":"a",}"#,  // a trailing comma
            #"{"peerId":"a""#,  // unterminated
            #"["a"]"#, "", "{", #"{"peerId":{"x":"y"}}"#,
        ]
        for text in declined {
            #expect(FlatJSON.decode(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(FlatJSON.decode([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D]) == nil, "invalid UTF-8")
        #expect(ChallengeRequest(flatJSON: Array(#"{"peer":"x"}"#.utf8)) == nil, "a missing member")
    }

    @Test("the background log writer keeps every line, in order, and flush() waits for them")
    func backgroundWriter() throws {
        var descriptors: [Int32] = [0, 0]
        try #require(pipe(&descriptors) == 0)
        let (readEnd, writeEnd) = (descriptors[0], descriptors[1])
        defer { close(readEnd) }
        let writer = BackgroundLogWriter(descriptor: writeEnd)
        let logger = Logger(label: "test.audit") { writer.logHandler(label: $0) }
        let count = 2_000
        // Read concurrently so a full pipe cannot stall the writer.
        let received = LockedBytes()
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let got = read(readEnd, &buffer, buffer.count)
                if got <= 0 { break }
                received.append(buffer[0..<got])
            }
            received.finish()
        }
        reader.start()
        for index in 0..<count { logger.info("line", metadata: ["n": "\(index)"]) }
        logger.debug("below the level: not written")
        writer.flush()
        close(writeEnd)
        while !received.finished { usleep(1_000) }
        let lines = String(decoding: received.bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == count)
        #expect(lines.enumerated().allSatisfy { $0.element.contains(" info test.audit: n=\($0.offset) [") })
    }
}

private final class LockedBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [UInt8] = []
    private var done = false
    func append(_ bytes: ArraySlice<UInt8>) { lock.withLock { storage += bytes } }
    func finish() { lock.withLock { done = true } }
    var finished: Bool { lock.withLock { done } }
    var bytes: [UInt8] { lock.withLock { storage } }
}
