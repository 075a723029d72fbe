import KeyrackCore
import NIOCore

/// A value of the Redis serialization protocol, version 2.
public enum RESPValue: Sendable, Equatable {
    /// `+OK`
    case simpleString(String)
    /// `-ERR …`: an error reply from the server.
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$n` followed by n bytes; `nil` is the null bulk string (`$-1`).
    case bulkString([UInt8]?)
    /// `*n` followed by n values; `nil` is the null array (`*-1`).
    case array([RESPValue]?)

    /// The value as text, for simple strings and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes?): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The value as an integer, for integers and numeric strings.
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString, .simpleString: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// Whether this is a null bulk string or null array.
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): return true
        default: return false
        }
    }
}

/// Why a reply could not be decoded.
public typealias RESPDecodingError = CodedError<RESPDecodingErrorCode>

/// The codes of ``RESPDecodingError``.
public struct RESPDecodingErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The bytes are not RESP2: an unknown type byte, a bad number or
    /// length, a missing CRLF.
    public static let malformed = RESPDecodingErrorCode("REDIS-RESP-MALFORMED")
    /// The reply is beyond what this client reads: nested too deep, a line,
    /// bulk string or array too long.
    public static let limit = RESPDecodingErrorCode("REDIS-RESP-LIMIT")
}

/// Parses RESP2 replies incrementally.
enum RESPParser {
    /// The largest bulk string accepted (Redis's own maximum is 512 MiB; the
    /// stores here never read more than a few hundred bytes).
    static let maximumBulkLength = 64 << 20
    /// The most elements an array may have.
    static let maximumArrayCount = 1 << 20
    /// The deepest nesting accepted.
    static let maximumDepth = 16

    /// Parses one value from `buffer`. Returns `nil` and leaves the reader
    /// index where it was if the value is not complete yet.
    static func parse(_ buffer: inout ByteBuffer, depth: Int = 0) throws(RESPDecodingError) -> RESPValue? {
        let saved = buffer.readerIndex
        guard let value = try parseValue(&buffer, depth: depth) else {
            buffer.moveReaderIndex(to: saved)
            return nil
        }
        return value
    }

    private static func parseValue(_ buffer: inout ByteBuffer, depth: Int) throws(RESPDecodingError) -> RESPValue? {
        guard depth <= maximumDepth else { throw RESPDecodingError(.limit, "nested deeper than \(maximumDepth)") }
        guard let marker = buffer.readInteger(as: UInt8.self) else { return nil }
        guard let line = try readLine(&buffer) else { return nil }
        switch marker {
        case UInt8(ascii: "+"):
            return .simpleString(line)
        case UInt8(ascii: "-"):
            return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int64(line) else { throw RESPDecodingError(.malformed, "integer '\(line.prefix(32))'") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1 else {
                throw RESPDecodingError(.malformed, "bulk length '\(line.prefix(32))'")
            }
            guard length <= maximumBulkLength else {
                throw RESPDecodingError(.limit, "bulk length \(length) over \(maximumBulkLength)")
            }
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2 else { return nil }
            let bytes = buffer.readBytes(length: length)!
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
                throw RESPDecodingError(.malformed, "bulk string not followed by CRLF")
            }
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(line), count >= -1 else {
                throw RESPDecodingError(.malformed, "array length '\(line.prefix(32))'")
            }
            guard count <= maximumArrayCount else {
                throw RESPDecodingError(.limit, "array length \(count) over \(maximumArrayCount)")
            }
            if count == -1 { return .array(nil) }
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                guard let element = try parseValue(&buffer, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw RESPDecodingError(.malformed, "unknown type byte \(marker)")
        }
    }

    /// A line up to CRLF (not included), or nil if no CRLF yet.
    private static func readLine(_ buffer: inout ByteBuffer) throws(RESPDecodingError) -> String? {
        let view = buffer.readableBytesView
        guard let end = view.firstIndex(of: UInt8(ascii: "\r")) else {
            guard buffer.readableBytes <= 4096 else { throw RESPDecodingError(.limit, "line longer than 4096 bytes") }
            return nil
        }
        let length = view.distance(from: view.startIndex, to: end)
        guard buffer.readableBytes >= length + 2 else { return nil }
        let line = buffer.readString(length: length)!
        guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
            throw RESPDecodingError(.malformed, "CR not followed by LF")
        }
        return line
    }

    /// Appends a command — an array of bulk strings — to `buffer`.
    static func writeCommand(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.count)\r\n")
                buffer.writeBytes(bytes)
            case .string(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            }
            buffer.writeString("\r\n")
        }
    }
}

/// One argument of a command.
public enum RESPArgument: Sendable, Equatable, ExpressibleByStringLiteral {
    /// Text, sent as its UTF-8 bytes.
    case string(String)
    /// Raw bytes.
    case bytes([UInt8])

    public init(stringLiteral value: String) { self = .string(value) }

    /// An integer, sent in decimal.
    public static func int(_ value: some BinaryInteger) -> RESPArgument { .string(String(value)) }
}
