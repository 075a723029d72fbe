import CKeyrackSystem

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A source of random bytes for secrets and coefficients.
///
/// Everything in Keyrack that draws randomness takes one of these, so that
/// production code uses the operating system's CSPRNG
/// (``SystemRandomSource``) and tests and the simulator use a reproducible
/// stream (``SeededRandomSource``).
public protocol SecureRandomSource: RandomNumberGenerator {
    /// Fills `buffer` with random bytes.
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer)
}

extension SecureRandomSource {
    /// The next 64 random bits.
    @inlinable
    public mutating func next() -> UInt64 {
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { fill($0) }
        return value
    }

    /// `count` random bytes.
    @inlinable
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { fill($0) }
        return result
    }

    /// `count` random bytes in zeroizing storage.
    @inlinable
    public mutating func secretBytes(_ count: Int) -> SecretBytes {
        SecretBytes(count: count) { fill($0) }
    }
}

/// The operating system's CSPRNG (`getrandom(2)` on Linux, `arc4random_buf` elsewhere), read in one call
/// per request rather than eight bytes at a time.
///
/// A failure to obtain randomness stops the process: continuing with
/// predictable coefficients would silently break every secret split after it.
public struct SystemRandomSource: SecureRandomSource, Sendable {
    /// Creates the source; it holds no state.
    public init() {}

    /// Fills `buffer` from the kernel.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard var cursor = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let got = keyrack_getrandom(cursor, remaining)
            if got < 0 {
                if errno == EINTR { continue }
                fatalError("getrandom failed (errno \(errno)); refusing to continue without randomness")
            }
            cursor += got
            remaining -= got
        }
    }
}

/// A deterministic stream: the ChaCha20 keystream under a 32-byte seed.
///
/// For tests and the simulator only, where a run must be reproducible from
/// its seed. It is a sound pseudorandom generator, but a seed that is known
/// makes every value it produces known.
public struct SeededRandomSource: SecureRandomSource, Sendable {
    private var key: [UInt32]
    private var counter: UInt64 = 0
    private var block: [UInt8] = []
    private var position = 64

    /// A stream keyed by a 64-bit seed (little-endian in the first key word pair).
    public init(seed: UInt64) {
        var words = [UInt32](repeating: 0, count: 8)
        words[0] = UInt32(truncatingIfNeeded: seed)
        words[1] = UInt32(truncatingIfNeeded: seed >> 32)
        words[2] = 0x6B65_7972  // "keyr": domain separation from other uses of the seed
        key = words
    }

    /// A stream keyed by 32 bytes.
    public init(key bytes: [UInt8]) {
        precondition(bytes.count == 32, "a ChaCha20 key is 32 bytes")
        key = (0..<8).map { index in
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[index * 4 + $1]) << (8 * $1) }
        }
    }

    /// Fills `buffer` with the next bytes of the keystream.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        for index in 0..<buffer.count {
            if position == 64 {
                block = Self.chacha20Block(key: key, counter: counter)
                counter &+= 1
                position = 0
            }
            buffer[index] = block[position]
            position += 1
        }
    }

    /// One 64-byte ChaCha20 block (RFC 8439, with a 64-bit counter and a zero nonce).
    static func chacha20Block(key: [UInt32], counter: UInt64) -> [UInt8] {
        var state: [UInt32] = [
            0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574,
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
            UInt32(truncatingIfNeeded: counter), UInt32(truncatingIfNeeded: counter >> 32), 0, 0,
        ]
        let initial = state
        @inline(__always)
        func quarterRound(_ a: Int, _ b: Int, _ c: Int, _ d: Int) {
            state[a] &+= state[b]
            state[d] ^= state[a]
            state[d] = state[d].rotatedLeft(16)
            state[c] &+= state[d]
            state[b] ^= state[c]
            state[b] = state[b].rotatedLeft(12)
            state[a] &+= state[b]
            state[d] ^= state[a]
            state[d] = state[d].rotatedLeft(8)
            state[c] &+= state[d]
            state[b] ^= state[c]
            state[b] = state[b].rotatedLeft(7)
        }
        for _ in 0..<10 {
            quarterRound(0, 4, 8, 12)
            quarterRound(1, 5, 9, 13)
            quarterRound(2, 6, 10, 14)
            quarterRound(3, 7, 11, 15)
            quarterRound(0, 5, 10, 15)
            quarterRound(1, 6, 11, 12)
            quarterRound(2, 7, 8, 13)
            quarterRound(3, 4, 9, 14)
        }
        var output = [UInt8]()
        output.reserveCapacity(64)
        for index in 0..<16 {
            let word = state[index] &+ initial[index]
            for shift in stride(from: 0, to: 32, by: 8) {
                output.append(UInt8(truncatingIfNeeded: word >> UInt32(shift)))
            }
        }
        return output
    }
}

extension UInt32 {
    @inline(__always)
    fileprivate func rotatedLeft(_ count: UInt32) -> UInt32 {
        (self << count) | (self >> (32 - count))
    }
}
