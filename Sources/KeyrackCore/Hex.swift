// Hex encoding and decoding without tables or branches on the bytes, since
// shares and secrets pass through here in the CLI.

// Package-wide conveniences on the standard byte array: `package`, so that
// Keyrack's modules share one constant-time codec without adding members to
// standard types for whoever imports a Keyrack library.
extension Array where Element == UInt8 {
    /// Decodes hex (either case, even length, no separators); `nil` on
    /// anything else. The time depends only on the length.
    package init?(hex text: some StringProtocol) {
        var result = [UInt8](repeating: 0, count: text.utf8.count / 2)
        let valid = result.withUnsafeMutableBytes { decodeHex(text, into: $0) }
        guard valid else { return nil }
        self = result
    }
}

extension SecretBytes {
    /// Decodes hex straight into zeroizing storage; `nil` on anything but an
    /// even number of hex digits.
    public init?(hex text: some StringProtocol) {
        var valid = false
        let decoded = SecretBytes(count: text.utf8.count / 2) { valid = decodeHex(text, into: $0) }
        guard valid else { return nil }
        self = decoded
    }
}

/// Decodes `text` into `output` (which holds half as many bytes); false if
/// the length is odd or a character is not a hex digit.
private func decodeHex(_ text: some StringProtocol, into output: UnsafeMutableRawBufferPointer) -> Bool {
    let utf8 = text.utf8
    guard utf8.count % 2 == 0, output.count == utf8.count / 2 else { return false }
    var invalid = 0
    var index = utf8.startIndex
    for position in 0..<output.count {
        let (high, highInvalid) = decodeNibble(utf8[index])
        index = utf8.index(after: index)
        let (low, lowInvalid) = decodeNibble(utf8[index])
        index = utf8.index(after: index)
        output[position] = high << 4 | low
        invalid |= highInvalid | lowInvalid
    }
    return invalid == 0
}

extension Sequence where Element == UInt8 {
    /// Lower-case hex.
    package var hexString: String {
        var out = [UInt8]()
        out.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            out.append(encodeNibble(byte >> 4))
            out.append(encodeNibble(byte & 0x0F))
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// All ones when `value` is negative, zero otherwise.
@inline(__always)
private func negativeMask(_ value: Int) -> Int { value >> (Int.bitWidth - 1) }

/// `'0'…'9'` for 0…9 and `'a'…'f'` for 10…15.
@inline(__always)
private func encodeNibble(_ nibble: UInt8) -> UInt8 {
    let n = Int(nibble)
    // For n > 9, 9 - n is negative: add the gap between '9'+1 and 'a'.
    return UInt8(truncatingIfNeeded: n + 48 + (negativeMask(9 - n) & 39))
}

/// The nibble a hex digit stands for, and a non-zero flag if it is none.
@inline(__always)
private func decodeNibble(_ char: UInt8) -> (UInt8, Int) {
    let c = Int(char)
    func inRange(_ low: Int, _ high: Int) -> Int {
        // All ones when low ≤ c ≤ high.
        ~(negativeMask(c - low) | negativeMask(high - c))
    }
    let digit = inRange(48, 57)
    let lower = inRange(97, 102)
    let upper = inRange(65, 70)
    let value = (digit & (c - 48)) | (lower & (c - 87)) | (upper & (c - 55))
    let valid = digit | lower | upper
    return (UInt8(truncatingIfNeeded: value), ~valid & 1)
}

extension FixedWidthInteger {
    /// The big-endian bytes (the wire format's and the sealed files' headers).
    package var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    /// The value of big-endian `bytes` (as many as the type is wide: the
    /// sealed files' generation fields).
    package init(bigEndianBytes bytes: some Collection<UInt8>) {
        self = bytes.reduce(Self.zero) { $0 << 8 | Self($1) }
    }
}
