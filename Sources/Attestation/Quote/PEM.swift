/// Splits PEM text into the DER bytes of its `CERTIFICATE` blocks.
///
/// Tolerates a trailing NUL (real quotes carry one) and any whitespace;
/// anything between blocks other than whitespace and NULs is an error.
enum PEM {
    private static let begin = Array("-----BEGIN CERTIFICATE-----".utf8)
    private static let end = Array("-----END CERTIFICATE-----".utf8)

    /// Strict on purpose: blocks are `-----BEGIN CERTIFICATE-----\n`, base64
    /// lines each ending in `\n` (`\r\n` is accepted too), and
    /// `-----END CERTIFICATE-----\n` (the last newline optional), then at
    /// most one NUL. Base64 must be canonical (zero unused bits). So two
    /// different byte strings never decode to the same chain, and a changed
    /// byte anywhere in the chain is noticed.
    static func certificates(_ text: some Collection<UInt8>, step: AttestationError.Step) throws(AttestationError)
        -> [[UInt8]]
    {
        let bytes = Array(text)
        var count = bytes.count
        if count > 0, bytes[count - 1] == 0 { count -= 1 }
        var result: [[UInt8]] = []
        var index = 0
        func fail(_ reason: String) -> AttestationError { AttestationError(.decodingFailed, step: step, reason) }
        func lineEnd(_ i: inout Int) -> Bool {
            if i < count, bytes[i] == 0x0A {
                i += 1
                return true
            }
            if i + 1 < count, bytes[i] == 0x0D, bytes[i + 1] == 0x0A {
                i += 2
                return true
            }
            return false
        }
        while index < count {
            guard starts(bytes, at: index, with: begin) else {
                throw fail("unexpected text outside a PEM certificate block")
            }
            index += begin.count
            guard lineEnd(&index) else { throw fail("PEM BEGIN line is not followed by a line break") }
            var body: [UInt8] = []
            while true {
                if starts(bytes, at: index, with: end) { break }
                let lineStart = index
                while index < count, bytes[index] != 0x0A, bytes[index] != 0x0D { index += 1 }
                guard index > lineStart else { throw fail("empty line in a PEM certificate block") }
                body += bytes[lineStart..<index]
                guard lineEnd(&index) else { throw fail("PEM certificate block without an END line") }
            }
            index += end.count
            if index < count {
                guard lineEnd(&index) else { throw fail("PEM END line is not followed by a line break") }
            }
            guard let der = base64Decode(body[...]), !der.isEmpty else {
                throw fail("PEM certificate block is not canonical base64")
            }
            result.append(der)
        }
        guard !result.isEmpty else { throw fail("no PEM certificate found") }
        return result
    }

    static func encode(_ ders: [[UInt8]]) -> String {
        var out = ""
        for der in ders {
            out += "-----BEGIN CERTIFICATE-----\n"
            let text = base64Encode(der)
            var i = text.startIndex
            while i < text.endIndex {
                let j = text.index(i, offsetBy: 64, limitedBy: text.endIndex) ?? text.endIndex
                out += text[i..<j] + "\n"
                i = j
            }
            out += "-----END CERTIFICATE-----\n"
        }
        return out
    }

    private static func starts(_ bytes: [UInt8], at index: Int, with prefix: [UInt8]) -> Bool {
        guard bytes.count - index >= prefix.count else { return false }
        for i in 0..<prefix.count where bytes[index + i] != prefix[i] { return false }
        return true
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Canonical standard base64: length a multiple of 4, `=` only at the
    /// end, unused bits zero; `nil` otherwise.
    static func base64Decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in text {
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            guard padding == 0 else { return nil }
            let value = decodeTable[Int(c)]
            guard value != 0xFF else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        guard padding <= 2, accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        guard bits == [0, 2, 4][padding] else { return nil }
        return out
    }

    static func base64Encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
