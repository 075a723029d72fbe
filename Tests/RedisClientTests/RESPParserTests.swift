import NIOCore
import PropertyBased
import Testing

@testable import RedisClient

@Suite("RESP parsing")
struct RESPParserTests {
    func parse(_ text: String) throws -> RESPValue? {
        var buffer = ByteBuffer(string: text)
        return try RESPParser.parse(&buffer)
    }

    @Test("every reply type")
    func types() throws {
        #expect(try parse("+OK\r\n") == .simpleString("OK"))
        #expect(try parse("-ERR wrong\r\n") == .error("ERR wrong"))
        #expect(try parse(":-42\r\n") == .integer(-42))
        #expect(try parse("$3\r\na\r\n\r\n") == .bulkString(Array("a\r\n".utf8)))
        #expect(try parse("$-1\r\n") == .bulkString(nil))
        #expect(try parse("*-1\r\n") == .array(nil))
        #expect(try parse("*2\r\n:1\r\n*1\r\n+x\r\n") == .array([.integer(1), .array([.simpleString("x")])]))
        #expect(try parse("$0\r\n\r\n") == .bulkString([]))
    }

    @Test("an incomplete reply waits for more bytes and consumes nothing")
    func incomplete() throws {
        let whole = "*3\r\n$5\r\nhello\r\n:7\r\n+OK\r\n"
        for cut in 0..<whole.utf8.count {
            var buffer = ByteBuffer(bytes: Array(whole.utf8.prefix(cut)))
            let before = buffer.readerIndex
            #expect(try RESPParser.parse(&buffer) == nil, "cut at \(cut)")
            #expect(buffer.readerIndex == before)
        }
        #expect(try parse(whole) == .array([.bulkString(Array("hello".utf8)), .integer(7), .simpleString("OK")]))
    }

    @Test(
        "malformed replies are errors",
        arguments: ["?x\r\n", ":12a\r\n", "$-2\r\n", "$3\r\nabcXY", "*-5\r\n", "+OK\rX"]
    )
    func malformed(text: String) {
        let error = #expect(throws: RESPDecodingError.self) { try parse(text) }
        #expect(error?.code == .malformed)
    }

    @Test(
        "replies beyond the limits are refused",
        arguments: [
            String(repeating: "*1\r\n", count: 40) + ":1\r\n", "$99999999999\r\n", "*2000000\r\n",
            "+" + String(repeating: "a", count: 5000),
        ]
    )
    func limits(text: String) {
        let error = #expect(throws: RESPDecodingError.self) { try parse(text) }
        #expect(error?.code == .limit)
    }

    @Test("random bytes never crash the parser")
    func fuzz() async {
        await propertyCheck(count: 500, input: Gen.uint8().array(of: 0...64)) { bytes in
            var buffer = ByteBuffer(bytes: bytes)
            _ = try? RESPParser.parse(&buffer)
        }
    }

    @Test("commands are encoded as arrays of bulk strings")
    func encoding() {
        var buffer = ByteBuffer()
        RESPParser.writeCommand(["SET", .bytes([0, 13, 10]), .int(5)], into: &buffer)
        #expect(buffer.readableBytesView.elementsEqual(Array("*3\r\n$3\r\nSET\r\n$3\r\n\0\r\n\r\n$1\r\n5\r\n".utf8)))
    }
}

@Suite("Redis URLs")
struct RedisConfigurationTests {
    @Test("full and short forms")
    func parse() throws {
        let full = try RedisConfiguration(url: "redis://alice:s3cret@10.0.0.5:6380/3")
        #expect(full.host == "10.0.0.5")
        #expect(full.port == 6380)
        #expect(full.database == 3)
        #expect(full.user == "alice")
        #expect(full.password == "s3cret")
        let short = try RedisConfiguration(url: "redis://localhost")
        #expect(short.port == 6379)
        #expect(short.database == 0)
        #expect(short.password == nil)
        let passwordOnly = try RedisConfiguration(url: "redis://:pw@h:1/")
        #expect(passwordOnly.user == nil)
        #expect(passwordOnly.password == "pw")
    }

    @Test("printing a configuration, alone or inside another value, never shows the password")
    func redacted() throws {
        struct Holder { let redis: RedisConfiguration }
        let configuration = try RedisConfiguration(url: "redis://alice:s3cret@10.0.0.5:6380/3")
        for text in [
            "\(configuration)", String(reflecting: configuration), "\(Holder(redis: configuration))",
            String(reflecting: Holder(redis: configuration)),
        ] {
            #expect(!text.contains("s3cret"), "\(text)")
        }
        #expect(configuration.description == "redis://alice:<redacted>@10.0.0.5:6380/3")
    }

    @Test(
        "bad URLs say what is wrong and never echo the password",
        arguments: [
            ("http://h", RedisConfigurationErrorCode.scheme), ("redis://", .host), ("redis://:pw@h:0", .port),
            ("redis://:pw@h:port", .port), ("redis://:pw@h/x", .database), ("redis://:pw@h/-1", .database),
        ]
    )
    func bad(url: String, code: RedisConfigurationErrorCode) {
        let error = #expect(throws: RedisConfigurationError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == code)
        #expect(error.map { !"\($0)".contains("pw") } == true)
    }
}
