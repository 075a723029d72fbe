import KeyrackCore
import Testing

@testable import SecretSharing

// K − 1 shares must reveal nothing. These tests look at the shares of a fixed
// secret over many splits and check, with chi-square tests, that
//   - each byte of each of K − 1 shares is uniform over all 256 values;
//   - the one combination of K − 1 shares that depends on the secret at all —
//     interpolating them at 0, which gives s + c_{K−1}·Π xᵢ — is uniform;
//   - two different secrets give the same distributions.
// The same checks run against generators with the classic bugs (only odd
// coefficients, never a zero coefficient) and must fail them: that is what
// shows the checks can fail.

/// A generator that only ever yields odd bytes.
struct OddOnlySource: SecureRandomSource {
    var inner: SeededRandomSource
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        inner.fill(buffer)
        for index in buffer.indices { buffer[index] |= 1 }
    }
}

/// A generator that never yields a zero byte (it redraws instead).
struct NeverZeroSource: SecureRandomSource {
    var inner: SeededRandomSource
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        inner.fill(buffer)
        for index in buffer.indices {
            while buffer[index] == 0 {
                withUnsafeMutableBytes(of: &buffer[index]) { inner.fill($0) }
            }
        }
    }
}

/// The chi-square statistic of `counts` against the uniform distribution.
func chiSquareUniform(_ counts: [Int]) -> Double {
    let total = Double(counts.reduce(0, +))
    let expected = total / Double(counts.count)
    return counts.reduce(0) { sum, observed in
        let difference = Double(observed) - expected
        return sum + difference * difference / expected
    }
}

/// The two-sample chi-square statistic for equal-sized samples.
func chiSquareTwoSample(_ a: [Int], _ b: [Int]) -> Double {
    zip(a, b).reduce(0) { sum, pair in
        let (x, y) = (Double(pair.0), Double(pair.1))
        return x + y == 0 ? sum : sum + (x - y) * (x - y) / (x + y)
    }
}

/// The critical value of chi-square with 255 degrees of freedom at p = 10⁻⁶
/// (Wilson–Hilferty): a correct implementation fails one check in a million
/// runs; the runs here are seeded, so they do not flake.
let chiSquareCritical = 377.0

/// Byte histograms of K − 1 shares, and of their interpolation at 0, over
/// `splits` splits of a 16-byte secret whose bytes all equal `secretByte`.
struct Observation {
    var shares: [[Int]]
    var projection: [Int]
}

func observe(
    secretByte: UInt8,
    threshold k: Int,
    shares n: Int,
    splits: Int,
    random: inout some SecureRandomSource
) -> Observation {
    let secret = SecretBytes([UInt8](repeating: secretByte, count: 16))
    var observation = Observation(
        shares: Array(repeating: Array(repeating: 0, count: 256), count: k - 1),
        projection: Array(repeating: 0, count: 256)
    )
    for _ in 0..<splits {
        let shares = try! Shamir.split(secret, threshold: k, shares: n, using: &random)
        // The last K − 1 shares: x-coordinates away from 1 exercise the powers.
        let seen = Array(shares.suffix(k - 1))
        for (index, share) in seen.enumerated() {
            share.y.withUnsafeBytes { for byte in $0 { observation.shares[index][Int(byte)] += 1 } }
        }
        let projection = Shamir.interpolate(seen, at: 0)
        projection.withUnsafeBytes { for byte in $0 { observation.projection[Int(byte)] += 1 } }
    }
    return observation
}

/// Every check that fails for threshold `k`, as readable lines.
func secrecyViolations(
    threshold k: Int,
    shares n: Int,
    splits: Int = 8192,
    random: inout some SecureRandomSource
) -> [String] {
    var violations: [String] = []
    let first = observe(secretByte: 0x00, threshold: k, shares: n, splits: splits, random: &random)
    let second = observe(secretByte: 0xA7, threshold: k, shares: n, splits: splits, random: &random)
    for (name, observation) in [("secret 00", first), ("secret a7", second)] {
        for (index, histogram) in observation.shares.enumerated() {
            let statistic = chiSquareUniform(histogram)
            if statistic > chiSquareCritical {
                violations.append("\(name): share \(index) bytes not uniform (χ² = \(Int(statistic)))")
            }
        }
        let statistic = chiSquareUniform(observation.projection)
        if statistic > chiSquareCritical {
            violations.append("\(name): K−1 shares at 0 not uniform (χ² = \(Int(statistic)))")
        }
    }
    for index in 0..<(k - 1) {
        let statistic = chiSquareTwoSample(first.shares[index], second.shares[index])
        if statistic > chiSquareCritical {
            violations.append("share \(index) differs between secrets (χ² = \(Int(statistic)))")
        }
    }
    let statistic = chiSquareTwoSample(first.projection, second.projection)
    if statistic > chiSquareCritical {
        violations.append("K−1 shares at 0 differ between secrets (χ² = \(Int(statistic)))")
    }
    return violations
}

@Suite("K − 1 shares reveal nothing")
struct SecrecyTests {
    @Test("with the real generator every distribution is uniform and independent of the secret", arguments: [2, 3, 5])
    func uniform(k: Int) {
        var random = SeededRandomSource(seed: UInt64(1000 + k))
        #expect(secrecyViolations(threshold: k, shares: k + 2, random: &random) == [])
    }

    @Test("the system CSPRNG passes too")
    func system() {
        var random = SystemRandomSource()
        #expect(secrecyViolations(threshold: 3, shares: 4, random: &random) == [])
    }

    @Test("a generator that draws only odd coefficients is caught", arguments: [2, 3, 5])
    func oddOnly(k: Int) {
        var random = OddOnlySource(inner: SeededRandomSource(seed: UInt64(2000 + k)))
        let violations = secrecyViolations(threshold: k, shares: k + 2, random: &random)
        #expect(violations.contains { $0.contains("at 0 not uniform") })
    }

    @Test("a generator that never draws zero is caught", arguments: [2, 3, 5])
    func neverZero(k: Int) {
        var random = NeverZeroSource(inner: SeededRandomSource(seed: UInt64(3000 + k)))
        let violations = secrecyViolations(threshold: k, shares: k + 2, random: &random)
        #expect(violations.contains { $0.contains("at 0 not uniform") })
        #expect(violations.contains { $0.contains("differ between secrets") })
    }

    @Test("the chi-square helpers measure what they claim")
    func helpers() {
        #expect(chiSquareUniform(Array(repeating: 10, count: 256)) == 0)
        // All mass in one bin: (2560 − 10)²/10 + 255 · 10.
        #expect(chiSquareUniform([2560] + Array(repeating: 0, count: 255)) == 650_250 + 2550)
        #expect(chiSquareTwoSample([5, 5], [5, 5]) == 0)
        #expect(chiSquareTwoSample([10, 0], [0, 10]) == 20)
    }
}
