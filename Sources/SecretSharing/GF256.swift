/// Arithmetic in GF(2^8) with the AES polynomial x⁸ + x⁴ + x³ + x + 1 (0x11B).
///
/// Every operation here is constant time: there are no lookup tables and no
/// branches on the operands. Multiplication is shift-and-add where the
/// "add" is selected with a mask made from the multiplier's bits and the
/// reduction is selected with a mask made from the carried-out bit.
///
/// The work is laid out across SIMD lanes (``GF256/Lanes``): one call
/// multiplies 16 independent pairs of field elements, so splitting a 16-byte
/// secret costs the same instructions as splitting a single byte would with
/// scalar code. The scalar entry points use the same vector code on one lane.
public enum GF256 {
    /// The vector of field elements the arithmetic works on, one per lane.
    public typealias Lanes = SIMD16<UInt8>

    /// The low byte of the reduction polynomial (x⁴ + x³ + x + 1).
    @usableFromInline static let reduction: UInt8 = 0x1B

    /// Multiplies every lane by x (the element 0x02).
    @inlinable @inline(__always)
    public static func double(_ a: Lanes) -> Lanes {
        // carry is 0 or 1 in each lane; 0 &- carry turns it into 0x00 or 0xFF.
        let carry = a &>> 7
        return (a &<< 1) ^ ((0 &- carry) & reduction)
    }

    /// Multiplies lane-wise: `result[i] = a[i] · b[i]`, in constant time.
    @inlinable @inline(__always)
    public static func multiply(_ a: Lanes, _ b: Lanes) -> Lanes {
        var result = Lanes()
        var power = a
        for bit: UInt8 in 0..<8 {
            let mask = 0 &- ((b &>> bit) & 1)
            result ^= power & mask
            power = double(power)
        }
        return result
    }

    /// Squares every lane.
    @inlinable @inline(__always)
    public static func square(_ a: Lanes) -> Lanes { multiply(a, a) }

    /// The multiplicative inverse of every lane, computed as a²⁵⁴ with a
    /// fixed addition chain (so zero maps to zero and the time does not depend
    /// on the value).
    @inlinable
    public static func inverse(_ a: Lanes) -> Lanes {
        let a2 = square(a)
        let a3 = multiply(a2, a)
        let a6 = square(a3)
        let a7 = multiply(a6, a)
        let a14 = square(a7)
        let a15 = multiply(a14, a)
        let a30 = square(a15)
        let a31 = multiply(a30, a)
        let a62 = square(a31)
        let a63 = multiply(a62, a)
        let a126 = square(a63)
        let a127 = multiply(a126, a)
        return square(a127)
    }

    /// Multiplies two field elements in constant time.
    @inlinable
    public static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        multiply(Lanes(repeating: a), Lanes(repeating: b))[0]
    }

    /// The multiplicative inverse of a field element (zero maps to zero).
    @inlinable
    public static func inverse(_ a: UInt8) -> UInt8 {
        inverse(Lanes(repeating: a))[0]
    }
}
