/// Splits PEM text into the DER bytes of its `CERTIFICATE` blocks.
///
/// Tolerates a trailing NUL (real quotes carry one) and any whitespace;
/// anything between blocks other than whitespace and NULs is an error.
enum PEM {
    private static let begin = Array("-----BEGIN CERTIFICATE-----".utf8)
    private static let end = Array("-----END CERTIFICATE-----".utf8)

    static func certificates(_ text: some Collection<UInt8>, step: AttestationError.Step) throws(AttestationError)
        -> [[UInt8]]
    {
        let bytes = Array(text)
        var result: [[UInt8]] = []
        var index = 0
        while true {
            while index < bytes.count, bytes[index] == 0 || isSpace(bytes[index]) { index += 1 }
            if index == bytes.count { break }
            guard starts(bytes, at: index, with: begin) else {
                throw AttestationError(.decodingFailed, step: step, "unexpected text outside a PEM certificate block")
            }
            index += begin.count
            guard let stop = find(bytes, end, from: index) else {
                throw AttestationError(.decodingFailed, step: step, "PEM certificate block without an END line")
            }
            guard let der = base64Decode(bytes[index..<stop]), !der.isEmpty else {
                throw AttestationError(.decodingFailed, step: step, "PEM certificate block is not valid base64")
            }
            result.append(der)
            index = stop + end.count
        }
        guard !result.isEmpty else {
            throw AttestationError(.decodingFailed, step: step, "no PEM certificate found")
        }
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

    private static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    private static func starts(_ bytes: [UInt8], at index: Int, with prefix: [UInt8]) -> Bool {
        guard bytes.count - index >= prefix.count else { return false }
        for i in 0..<prefix.count where bytes[index + i] != prefix[i] { return false }
        return true
    }

    private static func find(_ bytes: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        var i = from
        while i + needle.count <= bytes.count {
            if starts(bytes, at: i, with: needle) { return i }
            i += 1
        }
        return nil
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Standard base64 with `=` padding; whitespace is skipped.
    static func base64Decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in text {
            if isSpace(c) { continue }
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
        guard padding <= 2 else { return nil }
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
