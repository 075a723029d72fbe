import Foundation
import Logging
import NIOPosix
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
            ChallengeRequest(peerId: "p", time: 1_800_000_000, proof: "AAAA/+=="),
            ChallengeRequest(peerId: "p", time: -1, proof: awkward),
            ChallengeResponse(challengeId: "id", nonce: awkward, expiresAt: "2026-11-21T06:42:14.123Z"),
            GetKeyRequest(challengeId: awkward, quote: "AAAA/+==", signature: "x"),
            GetKeyRequest(challengeId: "c", quote: "q", signature: "x", wrapKey: awkward),
            GetKeyResponse(key: awkward),
            GetKeyResponse(wrappedKey: "AAAA/+=="),
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
            #"{"peerId":1.5}"#,  // a fraction
            #"{"peerId":1e3}"#,  // an exponent
            #"{"peerId":01}"#,  // a leading zero
            #"{"peerId":1234567890123456789}"#,  // more digits than read here
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
        #expect(ChallengeRequest(flatJSON: Array(#"{"peerId":1}"#.utf8)) == nil, "a number for a string")
        #expect(ChallengeRequest(flatJSON: Array(#"{"peerId":"p","time":"1"}"#.utf8)) == nil, "a string for a number")
        #expect(
            ChallengeRequest(flatJSON: Array(#"{"peerId":"p","time":-17,"proof":"c2ln"}"#.utf8))
                == ChallengeRequest(peerId: "p", time: -17, proof: "c2ln"))
        #expect(GetKeyResponse(flatJSON: Array(#"{"key":"a","wrappedKey":"b"}"#.utf8)) == nil, "both answers")
        #expect(GetKeyResponse(flatJSON: Array(#"{}"#.utf8)) == nil, "no answer")
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
        let received = LockedBytes.reading(readEnd)
        for index in 0..<count { logger.info("line", metadata: ["n": "\(index)"]) }
        logger.debug("below the level: not written")
        writer.flush()
        close(writeEnd)
        for _ in 0..<20_000 where !received.finished { usleep(1_000) }
        try #require(received.finished)
        let lines = String(decoding: received.bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == count)
        #expect(lines.enumerated().allSatisfy { $0.element.contains(" info test.audit: n=\($0.offset) [") })
    }

    @Test("a reader that stops: lines are dropped whole and counted, the logger never waits, the count is reported")
    func backgroundWriterDrops() throws {
        var descriptors: [Int32] = [0, 0]
        try #require(pipe(&descriptors) == 0)
        let (readEnd, writeEnd) = (descriptors[0], descriptors[1])
        defer { close(readEnd) }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let writer = BackgroundLogWriter(descriptor: writeEnd, pool: pool, maximumPending: 4_096)
        let logger = Logger(label: "test.audit") { writer.logHandler(label: $0) }
        // Nobody reads: the pipe (64 KiB) fills, the drain blocks in write(2),
        // and the loggers must go on regardless.
        let count = 20_000
        let start = ContinuousClock.now
        for index in 0..<count { logger.info("line", metadata: ["n": "\(index)"]) }
        #expect(ContinuousClock.now - start < .seconds(20), "appending waited for the reader")
        let dropped = writer.droppedLines
        #expect(dropped > 0)
        #expect(dropped < count)

        let received = LockedBytes.reading(readEnd)
        writer.flush()
        logger.info("after")
        writer.flush()
        close(writeEnd)
        for _ in 0..<20_000 where !received.finished { usleep(1_000) }
        try #require(received.finished)
        let lines = String(decoding: received.bytes, as: UTF8.self).split(separator: "\n")
        let kept = lines.compactMap { line in
            line.range(of: "n=").map { Int(line[$0.upperBound...].prefix { $0.isNumber }) } ?? nil
        }
        // Every line whole, in order, and kept + dropped = logged.
        #expect(kept.count + dropped == count)
        #expect(kept == kept.sorted())
        // Each run of dropped lines is reported where the log resumes; together they are the count.
        let notes = lines.compactMap { line -> Int? in
            guard line.hasPrefix("keyrack: "), line.hasSuffix(" log lines dropped: the log's reader fell behind")
            else { return nil }
            return Int(line.dropFirst(9).prefix { $0.isNumber })
        }
        #expect(notes.reduce(0, +) == dropped)
        #expect(lines.count == kept.count + notes.count + 1)
        #expect(lines.last?.hasSuffix("info test.audit: [KeyReleaseTests] after") == true, "\(lines.last ?? "")")
    }
}

private final class LockedBytes: @unchecked Sendable {
    /// Bytes read from `descriptor` on a thread of their own until end of file.
    static func reading(_ descriptor: Int32) -> LockedBytes {
        let received = LockedBytes()
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let got = read(descriptor, &buffer, buffer.count)
                if got <= 0 { break }
                received.append(buffer[0..<got])
            }
            received.finish()
        }
        reader.start()
        return received
    }

    private let lock = NSLock()
    private var storage: [UInt8] = []
    private var done = false
    func append(_ bytes: ArraySlice<UInt8>) { lock.withLock { storage += bytes } }
    func finish() { lock.withLock { done = true } }
    var finished: Bool { lock.withLock { done } }
    var bytes: [UInt8] { lock.withLock { storage } }
}
