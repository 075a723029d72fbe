/// A small strict JSON reader for the signed collateral documents (TCB info,
/// QE identity): objects, arrays, strings, integers, booleans and null.
/// Faster than Foundation's decoders on these documents, and strict: no
/// duplicate keys, no trailing garbage, nesting at most 32 deep, integers
/// only (Intel's documents have no fractions).
enum JSON: Equatable {
    case object([String: JSON])
    case array([JSON])
    case string(String)
    case integer(Int)
    case bool(Bool)
    case null

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    static func parse(_ text: String) throws(Invalid) -> JSON {
        var parser = Parser(bytes: Array(text.utf8))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.index == parser.bytes.count else { throw Invalid(description: "trailing characters") }
        return value
    }

    subscript(key: String) -> JSON? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var integer: Int? { if case .integer(let i) = self { i } else { nil } }
    var array: [JSON]? { if case .array(let a) = self { a } else { nil } }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func skipSpace() {
            while index < bytes.count,
                bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09
            {
                index += 1
            }
        }

        func fail(_ what: String) -> Invalid { Invalid(description: "\(what) at offset \(index)") }

        mutating func value(depth: Int) throws(Invalid) -> JSON {
            guard depth < 32 else { throw fail("nesting too deep") }
            guard index < bytes.count else { throw fail("unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                index += 1
                var fields: [String: JSON] = [:]
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(fields)
                }
                while true {
                    skipSpace()
                    let key = try string()
                    skipSpace()
                    try expect(UInt8(ascii: ":"))
                    skipSpace()
                    let element = try value(depth: depth + 1)
                    guard fields.updateValue(element, forKey: key) == nil else { throw fail("duplicate key \(key)") }
                    skipSpace()
                    if try endOrComma(UInt8(ascii: "}")) { return .object(fields) }
                }
            case UInt8(ascii: "["):
                index += 1
                var elements: [JSON] = []
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(elements)
                }
                while true {
                    skipSpace()
                    elements.append(try value(depth: depth + 1))
                    skipSpace()
                    if try endOrComma(UInt8(ascii: "]")) { return .array(elements) }
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try literal("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            default:
                return .integer(try integer())
            }
        }

        mutating func expect(_ byte: UInt8) throws(Invalid) {
            guard index < bytes.count, bytes[index] == byte else {
                throw fail("expected \(Character(Unicode.Scalar(byte)))")
            }
            index += 1
        }

        /// After an element: `end` closes (true), `,` continues (false).
        mutating func endOrComma(_ end: UInt8) throws(Invalid) -> Bool {
            guard index < bytes.count else { throw fail("unexpected end") }
            if bytes[index] == end {
                index += 1
                return true
            }
            try expect(UInt8(ascii: ","))
            return false
        }

        mutating func literal(_ word: String) throws(Invalid) {
            for byte in word.utf8 { try expect(byte) }
        }

        mutating func integer() throws(Invalid) -> Int {
            var negative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            let start = index
            var value = 0
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                let (times, o1) = value.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times.addingReportingOverflow(Int(bytes[index] - 0x30))
                guard !o1, !o2 else { throw fail("integer out of range") }
                value = sum
                index += 1
            }
            guard index > start else { throw fail("unexpected character") }
            guard !(bytes[start] == 0x30 && index - start > 1) else { throw fail("leading zero") }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") || bytes[index] | 0x20 == UInt8(ascii: "e") {
                throw fail("non-integer number")
            }
            return negative ? -value : value
        }

        mutating func string() throws(Invalid) -> String {
            try expect(UInt8(ascii: "\""))
            let start = index
            // Fast path: no escapes.
            while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\") {
                guard bytes[index] >= 0x20 else { throw fail("control character in a string") }
                index += 1
            }
            guard index < bytes.count else { throw fail("unterminated string") }
            var out = Array(bytes[start..<index])
            while bytes[index] != UInt8(ascii: "\"") {
                // An escape.
                index += 1
                guard index < bytes.count else { throw fail("unterminated escape") }
                let c = bytes[index]
                index += 1
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(c)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        try expect(UInt8(ascii: "\\"))
                        try expect(UInt8(ascii: "u"))
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                    out.append(contentsOf: Array(String(Character(unicode)).utf8))
                default: throw fail("invalid escape")
                }
                while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\") {
                    guard bytes[index] >= 0x20 else { throw fail("control character in a string") }
                    out.append(bytes[index])
                    index += 1
                }
                guard index < bytes.count else { throw fail("unterminated string") }
            }
            index += 1
            return String(decoding: out, as: UTF8.self)
        }

        mutating func hex4() throws(Invalid) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("short \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let digit: UInt32
                switch c {
                case 0x30...0x39: digit = UInt32(c - 0x30)
                case 0x41...0x46: digit = UInt32(c - 0x37)
                case 0x61...0x66: digit = UInt32(c - 0x57)
                default: throw fail("invalid \\u escape")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }
    }
}
