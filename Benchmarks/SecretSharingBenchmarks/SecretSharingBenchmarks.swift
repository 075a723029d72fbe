import Benchmark
import KeyrackCore
import SecretSharing

// Run with: ENABLE_BENCHMARKS=1 swift package benchmark --target SecretSharingBenchmarks
// Targets (2-core machine, release, N = 32, K = 17, 32-byte secret):
// split ≤ 5 µs including randomness, combine ≤ 2 µs, recompute ≤ 2 µs.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    for (shares, threshold, bytes) in [(32, 17, 32), (5, 3, 32), (255, 128, 32), (32, 17, 65_536)] {
        let label = "N=\(shares) K=\(threshold) \(bytes)B"
        var random = SystemRandomSource()
        let secret = random.secretBytes(bytes)
        let made = try! Shamir.split(secret, threshold: threshold, shares: shares)
        let basis = Array(made.prefix(threshold))
        let target = made[threshold % shares].x

        Benchmark("split \(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try Shamir.split(secret, threshold: threshold, shares: shares))
            }
        }
        Benchmark("combine \(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try Shamir.combine(basis, threshold: threshold))
            }
        }
        Benchmark("recompute \(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try Shamir.recompute(at: target, from: basis, threshold: threshold))
            }
        }
    }
}
