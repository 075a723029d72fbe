import ArgumentParser
@_spi(Benchmark) import Attestation
import Foundation

/// `keyrack bench verify`: median time of one quote verification with empty
/// and with warm caches.
struct VerifyBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Median microseconds per quote verification, with empty caches (cold) and warm caches (warm).",
        discussion: """
            cold_us: each verification uses a new verifier with an empty cache, so it checks the \
            CRLs, the collateral signatures and chains, the PCK chain and everything else. \
            warm_us: one verifier whose cache already holds the verified collateral, PCK chain \
            and QE report signature, as a service seeing the same platform again; the quote is \
            still parsed and its signature, the key binding, the QE identity and the TCB status \
            are checked every time. The collateral document and the trust anchor are loaded once \
            beforehand, as a service does at start-up: decoding a collateral document (JSON, \
            PEM, DER, CRLs; no signature checked) is timed separately as collateral_decode_us. \
            Run a release build.
            """
    )

    @Option(help: "The quote file.") var quote: String
    @Option(help: "The collateral JSON file.") var collateral: String
    @Option(help: "The root CA, DER or PEM (default: Intel's SGX root CA).") var trustAnchor: String?
    @Option(help: "Verify as of this Unix time.") var now: Int64
    @Option(help: "How many timed samples (the median is over these).") var samples = 201
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: .hidden) var breakdown = false
    @Flag(help: "Let cold verifications check the PCK chain on a second core (QuoteVerifier's parallel option).")
    var parallel = false

    func run() throws {
        try reportingFailures {
            guard samples > 0 else { throw CommandFailure("--samples must be positive") }
            let (bytes, collateral, anchor) = try loadVerificationInputs(
                quote: quote, collateral: collateral, trustAnchor: trustAnchor)
            // Fail early, with the reason, if the quote does not verify.
            do {
                _ = try QuoteVerifier(trustAnchor: anchor).verify(quote: bytes, collateral: collateral, now: now)
            } catch {
                throw CommandFailure("the quote does not verify: \(error)")
            }
            if breakdown {
                for (name, part) in try BenchmarkParts.parts(quote: bytes, collateral: collateral, anchor: anchor) {
                    let ns = try medianNanoseconds(samples: 51, batch: 8) { try part() }
                    try writeStandardOutput("\(name): \(ns / 1000) µs\n")
                }
            }
            var sink = 0
            let cold = try medianNanoseconds(samples: samples, batch: 1) {
                let verifier = QuoteVerifier(trustAnchor: anchor, cache: VerificationCache(), parallel: parallel)
                sink &+= try verifier.verify(quote: bytes, collateral: collateral, now: now).advisoryIDs.count + 1
            }
            let collateralJSON = collateral.jsonData()
            let decode = try medianNanoseconds(samples: max(samples / 4, 1), batch: 1) {
                sink &+= try Collateral(json: collateralJSON).rootCACRL.count
            }
            let warmVerifier = QuoteVerifier(trustAnchor: anchor)
            let warm = try medianNanoseconds(samples: samples, batch: 16) {
                sink &+= try warmVerifier.verify(quote: bytes, collateral: collateral, now: now).advisoryIDs.count + 1
            }
            precondition(sink != 0)
            let coldUs = (Double(cold) / 1000).rounded()
            let warmUs = (Double(warm) / 1000).rounded()
            if json {
                try writeStandardOutput(
                    """
                    {"benchmark":"verify","samples":\(samples),"build":"\(buildConfiguration)","parallel":\(parallel),\
                    "cold_us":\(Int(coldUs)),"warm_us":\(Int(warmUs)),\
                    "collateral_decode_us":\(Int((Double(decode) / 1000).rounded()))}

                    """)
            } else {
                try writeStandardOutput(
                    """
                    verify (\(buildConfiguration) build, median of \(samples) samples)
                      cold  \(Int(coldUs)) µs  (empty caches)
                      warm  \(Int(warmUs)) µs  (warm caches)
                      collateral decode  \(Int((Double(decode) / 1000).rounded())) µs  (once per collateral document, at load)

                    """)
            }
            if buildConfiguration != "release" {
                writeStandardError("keyrack: warning: this is a debug build; figures are not representative\n")
            }
        }
    }
}
