import ArgumentParser
@_spi(Benchmark) import Attestation
import Foundation

/// `keyrack bench verify`: median time of one quote verification with empty
/// and with warm caches.
struct VerifyBench: AsyncParsableCommand {
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
            --against-dcap-qvl also times dcap-qvl 0.7.0, the reference verifier (Python: pip \
            install dcap-qvl==0.7.0), on the same quote, collateral, anchor and time in the same run, \
            and prints keyrack's times as fractions of its (cold_ratio, warm_ratio; dcap-qvl keeps no \
            cache, so one figure serves both). Run a release build.
            """
    )

    @Option(help: "The quote file.") var quote: String
    @Option(help: "The collateral JSON file.") var collateral: String
    @Option(help: "The root CA, DER or PEM (default: Intel's SGX root CA).") var trustAnchor: String?
    @Option(help: "Verify as of this Unix time.") var now: Int64
    @Option(help: "How many timed samples (the median is over these).") var samples = 201
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: .hidden) var breakdown = false
    @Flag(help: "Let cold verifications check the PCK chain in a child task, on a second core (verifyConcurrently).")
    var parallel = false
    @Flag(help: "Also time dcap-qvl 0.7.0 (pip install dcap-qvl==0.7.0) on the same inputs and print the ratios.")
    var againstDcapQvl = false

    func run() async throws {
        try await reportingAsyncFailures {
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
                    let ns = try await medianNanoseconds(samples: 51, batch: 8) { try part() }
                    try writeStandardOutput("\(name): \(ns / 1000) µs\n")
                }
            }
            var sink = 0
            let cold = try await medianNanoseconds(samples: samples, batch: 1) {
                let verifier = QuoteVerifier(trustAnchor: anchor, cache: VerificationCache())
                let verified =
                    parallel
                    ? try await verifier.verifyConcurrently(
                        quote: try Quote(bytes: bytes), collateral: collateral, now: now)
                    : try verifier.verify(quote: bytes, collateral: collateral, now: now)
                sink &+= verified.advisoryIDs.count + 1
            }
            let collateralJSON = collateral.jsonData()
            let decode = try await medianNanoseconds(samples: max(samples / 4, 1), batch: 1) {
                sink &+= try Collateral(json: collateralJSON).rootCACRL.count
            }
            let warmVerifier = QuoteVerifier(trustAnchor: anchor)
            let warm = try await medianNanoseconds(samples: samples, batch: 16) {
                sink &+= try warmVerifier.verify(quote: bytes, collateral: collateral, now: now).advisoryIDs.count + 1
            }
            precondition(sink != 0)
            let coldUs = (Double(cold) / 1000).rounded()
            let warmUs = (Double(warm) / 1000).rounded()
            let reference =
                try againstDcapQvl
                ? DcapQvlTiming.medianMicroseconds(
                    quote: bytes, collateral: [UInt8](collateralJSON), anchor: anchor, now: now, samples: samples) : nil
            func ratio(_ ours: Double, _ theirs: Double) -> String { String(format: "%.3f", ours / theirs) }
            if json {
                var fields = """
                    "benchmark":"verify","samples":\(samples),"build":"\(buildConfiguration)","parallel":\(parallel),\
                    "cold_us":\(Int(coldUs)),"warm_us":\(Int(warmUs)),\
                    "collateral_decode_us":\(Int((Double(decode) / 1000).rounded()))
                    """
                if let reference {
                    fields += """
                        ,"dcap_qvl_us":\(Int(reference.rounded())),"cold_ratio":\(ratio(Double(cold) / 1000, reference)),\
                        "warm_ratio":\(ratio(Double(warm) / 1000, reference))
                        """
                }
                try writeStandardOutput("{\(fields)}\n")
            } else {
                try writeStandardOutput(
                    """
                    verify (\(buildConfiguration) build, median of \(samples) samples)
                      cold  \(Int(coldUs)) µs  (empty caches)
                      warm  \(Int(warmUs)) µs  (warm caches)
                      collateral decode  \(Int((Double(decode) / 1000).rounded())) µs  (once per collateral document, at load)

                    """)
                if let reference {
                    try writeStandardOutput(
                        """
                          dcap-qvl 0.7.0  \(Int(reference.rounded())) µs  (same inputs, same run)
                          cold / dcap-qvl  \(ratio(Double(cold) / 1000, reference))
                          warm / dcap-qvl  \(ratio(Double(warm) / 1000, reference))

                        """)
                }
            }
            if buildConfiguration != "release" {
                writeStandardError("keyrack: warning: this is a debug build; figures are not representative\n")
            }
        }
    }
}

/// dcap-qvl 0.7.0 (the reference verifier, a Python package around its Rust
/// code) timed on the same quote, collateral, anchor and time, in a child
/// `python3`: the median of `samples` verifications after one untimed call
/// that must succeed.
enum DcapQvlTiming {
    static let script = """
        import json, os, sys, time
        try:
            import dcap_qvl
        except ImportError:
            sys.stderr.write("dcap-qvl is not installed: run `pip install dcap-qvl==0.7.0`\\n")
            os._exit(3)
        args = json.loads(sys.stdin.read())
        quote = open(args["quote"], "rb").read()
        collateral = dcap_qvl.QuoteCollateralV3.from_json(open(args["collateral"]).read())
        root = open(args["root"], "rb").read()
        now = int(args["now"])
        try:
            dcap_qvl.verify_with_root_ca(quote, collateral, root, now)
        except Exception as error:
            sys.stderr.write("dcap-qvl does not verify the quote: %s\\n" % error)
            os._exit(4)
        times = []
        for _ in range(int(args["samples"])):
            start = time.perf_counter_ns()
            dcap_qvl.verify_with_root_ca(quote, collateral, root, now)
            times.append(time.perf_counter_ns() - start)
        times.sort()
        try:
            from importlib.metadata import version
            installed = version("dcap-qvl")
        except Exception:
            installed = getattr(dcap_qvl, "__version__", "?")
        print(json.dumps({"version": installed, "median_ns": times[len(times) // 2]}))
        sys.stdout.flush()
        # dcap-qvl 0.7.0's binding can crash at interpreter shutdown: leave without it.
        os._exit(0)
        """

    /// The median microseconds dcap-qvl takes per verification.
    static func medianMicroseconds(
        quote: [UInt8], collateral: [UInt8], anchor: TrustAnchor, now: Int64, samples: Int
    ) throws -> Double {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-bench-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = ["quote": quote, "collateral": collateral, "root": anchor.der].mapValues { bytes in
            (directory.appendingPathComponent(UUID().uuidString), bytes)
        }
        for (url, bytes) in files.values { try Data(bytes).write(to: url) }
        var arguments: [String: Any] = files.mapValues { $0.0.path }
        arguments["now"] = now
        arguments["samples"] = samples
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw CommandFailure("cannot run python3 for dcap-qvl (apt-get install python3): \(error)")
        }
        input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: arguments))
        try input.fileHandleForWriting.close()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        let complaint = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let answer = try? JSONSerialization.jsonObject(with: printed) as? [String: Any],
            let median = answer["median_ns"] as? Int
        else {
            let reason = complaint.trimmingCharacters(in: .whitespacesAndNewlines)
            throw CommandFailure(
                "dcap-qvl timing failed (exit \(process.terminationStatus)): \(reason.isEmpty ? "no answer" : reason)")
        }
        guard answer["version"] as? String == "0.7.0" else {
            throw CommandFailure(
                "dcap-qvl \(answer["version"] ?? "?") is installed; the comparison is with 0.7.0: pip install dcap-qvl==0.7.0"
            )
        }
        return Double(median) / 1000
    }
}
