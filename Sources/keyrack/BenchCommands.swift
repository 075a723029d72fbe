import ArgumentParser
import KeyrackCore
import SecretSharing

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Keyrack's building blocks (run a release build: swift run -c release keyrack bench ...).",
        subcommands: [ShamirBench.self, VerifyBench.self, KMSBench.self, RackBench.self, ChainBench.self]
    )

    struct ShamirBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "shamir",
            abstract: "Median time of split, combine and recompute.",
            discussion: """
                Draws a random secret, warms up, then times batches of operations and \
                reports the median nanoseconds per operation. split includes drawing \
                the random coefficients from the system CSPRNG; combine and recompute \
                use exactly K shares.
                """
        )

        @Option(help: "N, the number of shares.") var shares = 32
        @Option(help: "K, the threshold.") var threshold = 17
        @Option(help: "The secret's length in bytes.") var secretBytes = 32
        @Option(help: "How many timed batches (the median is over these).") var samples = 301
        @Option(help: "Operations per timed batch.") var batch = 64
        @Flag(help: "Print one JSON object.") var json = false

        func run() async throws {
            try await reportingAsyncFailures {
                guard samples > 0, batch > 0 else { throw CommandFailure("--samples and --batch must be positive") }
                var random = SystemRandomSource()
                let secret = random.secretBytes(secretBytes)
                let made = try Shamir.split(secret, threshold: threshold, shares: shares)
                let basis = Array(made.prefix(threshold))
                let target = made[threshold % made.count].x

                var sink = 0
                let split = try await medianNanoseconds(samples: samples, batch: batch) {
                    sink &+= try Shamir.split(secret, threshold: threshold, shares: shares).count
                }
                let combine = try await medianNanoseconds(samples: samples, batch: batch) {
                    sink &+= try Shamir.combine(basis, threshold: threshold).count
                }
                let recompute = try await medianNanoseconds(samples: samples, batch: batch) {
                    sink &+= try Shamir.recompute(at: target, from: basis, threshold: threshold).count
                }
                precondition(sink != 0)

                if json {
                    try writeStandardOutput(
                        """
                        {"benchmark":"shamir","shares":\(shares),"threshold":\(threshold),\
                        "secret_bytes":\(secretBytes),"samples":\(samples),"batch":\(batch),\
                        "build":"\(buildConfiguration)","split_ns":\(split),"combine_ns":\(combine),\
                        "recompute_ns":\(recompute)}

                        """
                    )
                } else {
                    try writeStandardOutput(
                        """
                        shamir N=\(shares) K=\(threshold) secret=\(secretBytes) bytes (\(buildConfiguration) build)
                          split      \(split) ns
                          combine    \(combine) ns
                          recompute  \(recompute) ns

                        """
                    )
                }
                if buildConfiguration != "release" {
                    writeStandardError("keyrack: warning: this is a debug build; figures are not representative\n")
                }
            }
        }
    }
}

#if DEBUG
    let buildConfiguration = "debug"
#else
    let buildConfiguration = "release"
#endif

/// Runs `body` `batch` times per sample after a warm-up of as many samples,
/// and returns the median over samples of the nanoseconds per operation.
func medianNanoseconds(samples: Int, batch: Int, _ body: () async throws -> Void) async rethrows -> Int {
    let clock = ContinuousClock()
    for _ in 0..<(max(samples / 4, 1) * batch) { try await body() }
    var perOperation: [Double] = []
    perOperation.reserveCapacity(samples)
    for _ in 0..<samples {
        let start = clock.now
        for _ in 0..<batch { try await body() }
        let elapsed = clock.now - start
        let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        perOperation.append(nanoseconds / Double(batch))
    }
    perOperation.sort()
    return Int(perOperation[perOperation.count / 2].rounded())
}
