import KeyrackCore

/// Shamir secret sharing over GF(2^8).
///
/// A secret of L bytes is shared with one random polynomial of degree K − 1
/// per byte, whose constant term is that byte; member x gets the values of
/// all L polynomials at x. Any K shares determine the polynomials (and so the
/// secret, at x = 0, or any other member's share, at its x); K − 1 shares say
/// nothing about the secret, because every coefficient, the leading one
/// included, is drawn uniformly from all 256 values.
///
/// The arithmetic runs on 32 secret bytes at once (``GF256/Lanes``), with no
/// table lookups and no branches on secret values. The x-coordinates, the
/// threshold and the lengths are public and may shape the control flow.
public enum Shamir {
    /// The largest number of shares: every non-zero x-coordinate.
    public static let maximumShares = 255

    /// Splits `secret` into `shares` shares, any `threshold` of which rebuild
    /// it, drawing coefficients from the system CSPRNG.
    ///
    /// Share i (0-based) has x-coordinate i + 1.
    public static func split(
        _ secret: SecretBytes,
        threshold: Int,
        shares: Int
    ) throws(SecretSharingError) -> [Share] {
        var random = SystemRandomSource()
        return try split(secret, threshold: threshold, shares: shares, using: &random)
    }

    /// Splits `secret` into `shares` shares, any `threshold` of which rebuild
    /// it, drawing coefficients from `random`.
    public static func split<Random: SecureRandomSource>(
        _ secret: SecretBytes,
        threshold: Int,
        shares count: Int,
        using random: inout Random
    ) throws(SecretSharingError) -> [Share] {
        guard (2...maximumShares).contains(count) else { throw .shareCountOutOfRange(shares: count) }
        guard (2...count).contains(threshold) else {
            throw .thresholdOutOfRange(threshold: threshold, shares: count)
        }
        let length = secret.count
        guard length > 0 else { throw .emptySecret }

        let degree = threshold - 1
        // Coefficient j (1…K−1) of the polynomial for byte b is at
        // (j − 1) · length + b. Drawn in one call: one syscall, not hundreds.
        let coefficients = random.secretBytes(degree * length)

        // powers[s · degree + (j − 1)] = x_s^j for x_s = s + 1: public values.
        let powers = publicPowers(count: count, degree: degree)

        // All share values in one zeroizing allocation: share s owns
        // [s · length, (s + 1) · length).
        let output = SecretBytes.Storage(count: count * length)
        // doublings[(j · 8 + i) · 2 + c] = coefficient j · x^i, for the
        // c-th 16 bytes of the current 32-byte block.
        let doublings = UnsafeMutableBufferPointer<GF256.Lanes>.allocate(capacity: degree * 8 * 2)
        defer {
            secureZero(UnsafeMutableRawBufferPointer(doublings))
            doublings.deallocate()
        }
        let masks = nibbleMasks
        let laneWidth = GF256.Lanes.scalarCount

        secret.withUnsafeBytes { secretBytes in
            coefficients.withUnsafeBytes { coefficientBytes in
                var blockStart = 0
                while blockStart < length {
                    // A block is two lanes of 16 bytes; past the end of the
                    // secret the lanes are zero and nothing is stored.
                    let width0 = min(laneWidth, length - blockStart)
                    let width1 = max(0, min(laneWidth, length - blockStart - laneWidth))
                    for j in 0..<degree {
                        let base = j * length + blockStart
                        var value0 = loadLanes(coefficientBytes, offset: base, width: width0)
                        var value1 = loadLanes(coefficientBytes, offset: base + laneWidth, width: width1)
                        for i in 0..<8 {
                            doublings[(j * 8 + i) * 2] = value0
                            doublings[(j * 8 + i) * 2 + 1] = value1
                            value0 = GF256.double(value0)
                            value1 = GF256.double(value1)
                        }
                    }
                    let constant0 = loadLanes(secretBytes, offset: blockStart, width: width0)
                    let constant1 = loadLanes(secretBytes, offset: blockStart + laneWidth, width: width1)
                    for s in 0..<count {
                        var accumulator0 = constant0
                        var accumulator1 = constant1
                        for j in 0..<degree {
                            // value · p = Σᵢ bitᵢ(p) · (value · x^i); the
                            // masks for p's bits come from its nibbles.
                            let p = Int(powers[s * degree + j])
                            let low = masks + (p & 0x0F) * 4
                            let high = masks + (p >> 4) * 4
                            let row = UnsafePointer(doublings.baseAddress! + j * 16)
                            for i in 0..<4 {
                                accumulator0 ^= row[2 * i] & low[i]
                                accumulator1 ^= row[2 * i + 1] & low[i]
                                accumulator0 ^= row[2 * i + 8] & high[i]
                                accumulator1 ^= row[2 * i + 9] & high[i]
                            }
                        }
                        storeLanes(accumulator0, into: output.buffer, offset: s * length + blockStart, width: width0)
                        storeLanes(
                            accumulator1,
                            into: output.buffer,
                            offset: s * length + blockStart + laneWidth,
                            width: width1
                        )
                    }
                    blockStart += 2 * laneWidth
                }
            }
        }
        return (0..<count).map { s in
            Share(validatedX: UInt8(s + 1), y: SecretBytes(storage: output, range: (s * length)..<((s + 1) * length)))
        }
    }

    /// Rebuilds the secret from at least `threshold` shares.
    ///
    /// The first `threshold` shares determine the secret. Any further shares
    /// are checked against it, so a share that was corrupted or forged is
    /// reported (``SecretSharingError/inconsistentShares(x:)``) rather than
    /// silently ignored.
    public static func combine(_ shares: [Share], threshold: Int) throws(SecretSharingError) -> SecretBytes {
        try validate(shares, threshold: threshold)
        let basis = Array(shares.prefix(threshold))
        try checkConsistency(of: shares.dropFirst(threshold), against: basis)
        return interpolate(basis, at: 0)
    }

    /// The share a member with coordinate `x` would hold, computed from at
    /// least `threshold` shares (extra shares are checked as in
    /// ``combine(_:threshold:)``).
    public static func recompute(
        at x: UInt8,
        from shares: [Share],
        threshold: Int
    ) throws(SecretSharingError) -> Share {
        guard x != 0 else { throw .zeroCoordinate }
        try validate(shares, threshold: threshold)
        let basis = Array(shares.prefix(threshold))
        try checkConsistency(of: shares.dropFirst(threshold), against: basis)
        return Share(validatedX: x, y: interpolate(basis, at: x))
    }

    // MARK: - Validation

    private static func validate(_ shares: [Share], threshold: Int) throws(SecretSharingError) {
        guard (2...maximumShares).contains(threshold) else {
            throw .thresholdOutOfRange(threshold: threshold, shares: shares.count)
        }
        guard shares.count >= threshold else { throw .notEnoughShares(have: shares.count, need: threshold) }
        let length = shares[0].count
        var seen = [Bool](repeating: false, count: 256)
        for share in shares {
            // Share's initializer already refuses x = 0 and empty values.
            guard share.count == length else {
                throw .lengthMismatch(expected: length, found: share.count, x: share.x)
            }
            guard !seen[Int(share.x)] else { throw .duplicateCoordinate(x: share.x) }
            seen[Int(share.x)] = true
        }
    }

    private static func checkConsistency(
        of extra: ArraySlice<Share>,
        against basis: [Share]
    ) throws(SecretSharingError) {
        for share in extra where interpolate(basis, at: share.x) != share.y {
            throw .inconsistentShares(x: share.x)
        }
    }

    // MARK: - Interpolation

    /// The value at `t` of the polynomials through `shares` (Lagrange form):
    /// Σᵢ yᵢ · λᵢ(t) with λᵢ(t) = Πⱼ≠ᵢ (t − xⱼ) / (xᵢ − xⱼ).
    static func interpolate(_ shares: [Share], at t: UInt8) -> SecretBytes {
        let weights = lagrangeWeights(shares.map(\.x), at: t)
        let length = shares[0].count
        let output = SecretBytes.Storage(count: length)
        let laneWidth = GF256.Lanes.scalarCount
        // Each share's storage is a heap allocation kept alive by `shares`
        // (withExtendedLifetime below) for as long as these views are used.
        let values = shares.map { share in share.y.withUnsafeBytes { $0 } }
        defer { withExtendedLifetime(shares) {} }
        var offset = 0
        while offset < length {
            let width = min(laneWidth, length - offset)
            var accumulator = GF256.Lanes()
            for index in 0..<values.count {
                let y = loadLanes(values[index], offset: offset, width: width)
                accumulator ^= GF256.multiply(y, GF256.Lanes(repeating: weights[index]))
            }
            storeLanes(accumulator, into: output.buffer, offset: offset, width: width)
            offset += width
        }
        return SecretBytes(storage: output)
    }

    /// λᵢ(t) for every i. In GF(2^8) subtraction is XOR. Only public values
    /// (the coordinates) enter; the arithmetic is the constant-time lane code
    /// all the same.
    ///
    /// When t is one of the xᵢ the weights pick that share. Otherwise
    /// λᵢ = P / Dᵢ with P = Πⱼ (t − xⱼ) and Dᵢ = (t − xᵢ) · Πⱼ≠ᵢ (xᵢ − xⱼ), so
    /// each lane needs one running product and one inversion.
    static func lagrangeWeights(_ xs: [UInt8], at t: UInt8) -> [UInt8] {
        if let match = xs.firstIndex(of: t) {
            return xs.indices.map { $0 == match ? 1 : 0 }
        }
        let lanes = GF256.Lanes.scalarCount
        var numerator: UInt8 = 1
        var numeratorLanes = GF256.Lanes(repeating: 1)
        var start = 0
        while start < xs.count {
            var factors = GF256.Lanes(repeating: 1)
            for j in start..<min(start + lanes, xs.count) { factors[j - start] = t ^ xs[j] }
            numeratorLanes = GF256.multiply(numeratorLanes, factors)
            start += lanes
        }
        for lane in 0..<lanes { numerator = GF256.multiply(numerator, numeratorLanes[lane]) }

        var weights = [UInt8](repeating: 0, count: xs.count)
        start = 0
        while start < xs.count {
            let end = min(start + lanes, xs.count)
            var own = GF256.Lanes(repeating: 1)
            for i in start..<end { own[i - start] = xs[i] }
            var denominator = own ^ GF256.Lanes(repeating: t)
            for (j, xj) in xs.enumerated() {
                var factor = own ^ GF256.Lanes(repeating: xj)
                // Lane i = j has no factor (xᵢ − xᵢ).
                if (start..<end).contains(j) { factor[j - start] = 1 }
                denominator = GF256.multiply(denominator, factor)
            }
            let weight = GF256.multiply(GF256.Lanes(repeating: numerator), GF256.inverse(denominator))
            for i in start..<end { weights[i] = weight[i - start] }
            start = end
        }
        return weights
    }

    /// x^j for x = 1…count and j = 1…degree, row by row: public values.
    static func publicPowers(count: Int, degree: Int) -> [UInt8] {
        let lanes = GF256.Lanes.scalarCount
        var powers = [UInt8](repeating: 0, count: count * degree)
        var start = 0
        while start < count {
            let end = min(start + lanes, count)
            var xs = GF256.Lanes(repeating: 1)
            for s in start..<end { xs[s - start] = UInt8(s + 1) }
            // Multiplying by the fixed xs: its bit masks are made once.
            var xMasks = [GF256.Lanes](repeating: GF256.Lanes(), count: 8)
            for bit: UInt8 in 0..<8 { xMasks[Int(bit)] = 0 &- ((xs &>> bit) & 1) }
            var power = xs
            for j in 0..<degree {
                for s in start..<end { powers[s * degree + j] = power[s - start] }
                var product = GF256.Lanes()
                var doubled = power
                for bit in 0..<8 {
                    product ^= doubled & xMasks[bit]
                    doubled = GF256.double(doubled)
                }
                power = product
            }
            start = end
        }
        return powers
    }

}

/// Sixteen rows of four lane masks: row n holds, for i = 0…3, all ones if
/// bit i of n is set and all zeros otherwise. Split picks rows by the nibbles
/// of the public powers x^j to turn "add value · x^i if bit i of x^j is set"
/// into AND and XOR. Only public data (coordinates) index this table. It is
/// written once, during lazy global initialization, and only read afterwards.
nonisolated(unsafe) let nibbleMasks: UnsafePointer<GF256.Lanes> = {
    let table = UnsafeMutablePointer<GF256.Lanes>.allocate(capacity: 16 * 4)
    for nibble in 0..<16 {
        for bit in 0..<4 {
            table[nibble * 4 + bit] = GF256.Lanes(repeating: (nibble >> bit) & 1 == 1 ? 0xFF : 0x00)
        }
    }
    return UnsafePointer(table)
}()

// MARK: - Loading and storing lanes

@inline(__always)
func loadLanes(_ bytes: UnsafeRawBufferPointer, offset: Int, width: Int) -> GF256.Lanes {
    if width == GF256.Lanes.scalarCount {
        return bytes.loadUnaligned(fromByteOffset: offset, as: GF256.Lanes.self)
    }
    var lanes = GF256.Lanes()
    guard width > 0 else { return lanes }
    withUnsafeMutableBytes(of: &lanes) { destination in
        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + width)]))
    }
    return lanes
}

@inline(__always)
func storeLanes(_ lanes: GF256.Lanes, into bytes: UnsafeMutableRawBufferPointer, offset: Int, width: Int) {
    guard width > 0 else { return }
    withUnsafeBytes(of: lanes) { source in
        bytes.baseAddress!.advanced(by: offset).copyMemory(from: source.baseAddress!, byteCount: width)
    }
}
