/// A bounds-checked little-endian cursor over the quote bytes.
///
/// Every read checks the length against what is left and returns a slice that
/// shares the quote's storage; running out is an ``AttestationError`` naming
/// the field, never a trap.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset: Int
    private(set) var end: Int

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        self.offset = range?.lowerBound ?? 0
        self.end = range?.upperBound ?? bytes.count
    }

    var remaining: Int { end - offset }

    /// Stops reading `count` bytes from here (`count ≤ remaining`).
    mutating func limit(to count: Int) {
        precondition(count >= 0 && count <= remaining)
        end = offset + count
    }

    mutating func take(_ count: Int, _ field: String) throws(AttestationError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw AttestationError(
                .truncated, step: .parseQuote,
                "\(field) needs \(count) bytes at offset \(offset) but only \(remaining) are left")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func u16(_ field: String) throws(AttestationError) -> UInt16 {
        let s = try take(2, field)
        return UInt16(s[s.startIndex]) | UInt16(s[s.startIndex + 1]) << 8
    }

    mutating func u32(_ field: String) throws(AttestationError) -> UInt32 {
        let s = try take(4, field)
        var value: UInt32 = 0
        for i in 0..<4 { value |= UInt32(s[s.startIndex + i]) << (8 * i) }
        return value
    }
}

extension ArraySlice where Element == UInt8 {
    /// Reads a little-endian integer at `offset` from the slice's start.
    @inline(__always)
    func littleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<(T.bitWidth / 8) { value |= T(self[startIndex + offset + i]) << (8 * i) }
        return value
    }

    /// The bytes from `offset` (relative to the slice's start), `count` long.
    @inline(__always)
    func sub(_ offset: Int, _ count: Int) -> ArraySlice<UInt8> {
        self[(startIndex + offset)..<(startIndex + offset + count)]
    }
}
