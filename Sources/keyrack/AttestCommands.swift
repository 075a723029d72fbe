import ArgumentParser
import Attestation
import Foundation
import KeyrackCore
import SecretSharing

/// `keyrack attest`: verify TDX quotes with DCAP.
struct AttestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attest",
        abstract: "Verify Intel TDX quotes (DCAP: PCK chain and CRLs, TCB info, QE identity, signatures, TCB status).",
        subcommands: [Verify.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a TDX quote against collateral; exit 0 if accepted, 1 if rejected, 2 on a usage error.",
            discussion: """
                The collateral is a dcap-qvl JSON document (like shared/testdata/tdx/*.collateral.json \
                or a software TEE's collateral.json). The trust anchor is Intel's SGX root CA unless \
                --trust-anchor names a DER or PEM root (a software TEE's root.der). With --json, one \
                object {"ok", "status", "advisoryIds", "error", "tdReport"} is printed, the TD report's \
                fields in hex (tdReport is null when the quote does not parse).

                --pccs URL fetches the collateral from a PCCS or Intel's PCS instead (v4 API: \
                the PCK CRL for the quote's PCK CA, the TDX TCB info for its FMSPC, the TD QE \
                identity and the root CA CRL); the fetched documents must verify under the trust \
                anchor. No collateral (the PCCS down, an unknown FMSPC, a tampered answer) is a \
                rejection with code collateralUnavailable. Exactly one of --collateral and --pccs.
                """
        )

        @Option(help: "The quote file (raw bytes).") var quote: String
        @Option(help: "The collateral JSON file.") var collateral: String?
        @Option(help: "Fetch the collateral from this PCCS (or Intel's PCS) base URL.") var pccs: String?
        @Option(help: "The root CA, DER or PEM (default: Intel's SGX root CA).") var trustAnchor: String?
        @Option(help: "Verify as of this Unix time (default: now).") var now: Int64?
        @Flag(help: "Print one JSON object.") var json = false

        func run() async throws {
            let inputs: ([UInt8], Collateral?, TrustAnchor)
            do {
                guard (collateral == nil) != (pccs == nil) else {
                    throw CommandFailure("give exactly one of --collateral FILE and --pccs URL")
                }
                inputs = try loadVerificationInputs(quote: quote, collateral: collateral, trustAnchor: trustAnchor)
            } catch {
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(2)
            }
            let (bytes, file, anchor) = inputs
            let instant = now ?? Int64(Date().timeIntervalSince1970)
            let parsed = try? Quote(bytes: bytes)
            let verifier = QuoteVerifier(trustAnchor: anchor)
            var outcome: Result<VerifiedQuote, AttestationError>
            do throws(AttestationError) {
                let quote = try Quote(bytes: bytes)
                let collateral: Collateral
                if let file {
                    collateral = file
                } else {
                    let cache = PCCSCollateralCache(url: pccs ?? "", verifier: verifier)
                    collateral = try await cache.collateral(for: quote, now: instant)
                }
                outcome = .success(try verifier.verify(quote: quote, collateral: collateral, now: instant))
            } catch {
                outcome = .failure(error)
            }
            if json {
                try writeStandardOutput(verdictJSON(outcome, report: parsed?.report) + "\n")
            } else {
                switch outcome {
                case .success(let verified):
                    try writeStandardOutput(
                        """
                        accepted: TCB status \(verified.status.rawValue)\
                        \(verified.advisoryIDs.isEmpty ? "" : ", advisories " + verified.advisoryIDs.joined(separator: " "))
                        MRTD        \(verified.report.mrTD.hexString)
                        RTMR0       \(verified.report.rtmr0.hexString)
                        RTMR1       \(verified.report.rtmr1.hexString)
                        RTMR2       \(verified.report.rtmr2.hexString)
                        RTMR3       \(verified.report.rtmr3.hexString)
                        report data \(verified.report.reportData.hexString)

                        """)
                case .failure(let error):
                    try writeStandardOutput("rejected: \(error)\n")
                }
            }
            if case .failure = outcome { throw ExitCode(1) }
        }
    }
}

/// Reads the quote, collateral and trust anchor files named on the command line.
func loadVerificationInputs(quote: String, collateral: String, trustAnchor: String?) throws -> (
    [UInt8], Collateral, TrustAnchor
) {
    let (bytes, parsed, anchor) = try loadVerificationInputs(
        quote: quote, collateral: Optional(collateral), trustAnchor: trustAnchor)
    guard let parsed else { throw CommandFailure("no collateral file") }
    return (bytes, parsed, anchor)
}

/// Reads the quote, the collateral (when a file is named) and trust anchor files.
func loadVerificationInputs(quote: String, collateral: String?, trustAnchor: String?) throws -> (
    [UInt8], Collateral?, TrustAnchor
) {
    func read(_ path: String, _ what: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandFailure("cannot read the \(what) file \(path)")
        }
        return [UInt8](data)
    }
    let bytes = try read(quote, "quote")
    var parsedCollateral: Collateral? = nil
    if let collateral {
        do {
            parsedCollateral = try Collateral(json: try read(collateral, "collateral"))
        } catch let error as AttestationError {
            throw CommandFailure("\(collateral): \(error.reason)")
        }
    }
    var anchor = TrustAnchor.intelSGXRootCA
    if let trustAnchor {
        do {
            anchor = try TrustAnchor(bytes: try read(trustAnchor, "trust anchor"))
        } catch let error as AttestationError {
            throw CommandFailure("\(trustAnchor): \(error.reason)")
        }
    }
    return (bytes, parsedCollateral, anchor)
}

/// The `attest verify --json` object.
func verdictJSON(_ outcome: Result<VerifiedQuote, AttestationError>, report: TDReport?) -> String {
    var fields: [(String, String)] = []
    switch outcome {
    case .success(let verified):
        fields.append(("ok", "true"))
        fields.append(("status", jsonString(verified.status.rawValue)))
        fields.append(("advisoryIds", "[" + verified.advisoryIDs.map(jsonString).joined(separator: ",") + "]"))
        fields.append(("error", "null"))
    case .failure(let error):
        fields.append(("ok", "false"))
        fields.append(("status", "null"))
        fields.append(("advisoryIds", "[]"))
        fields.append(("error", jsonString(error.description)))
    }
    if let report {
        var items: [(String, ArraySlice<UInt8>)] = [
            ("teeTcbSvn", report.teeTCBSVN), ("mrSeam", report.mrSeam), ("mrSignerSeam", report.mrSignerSeam),
            ("seamAttributes", report.seamAttributes), ("tdAttributes", report.tdAttributes), ("xfam", report.xfam),
            ("mrTd", report.mrTD), ("mrConfigId", report.mrConfigID), ("mrOwner", report.mrOwner),
            ("mrOwnerConfig", report.mrOwnerConfig), ("rtmr0", report.rtmr0), ("rtmr1", report.rtmr1),
            ("rtmr2", report.rtmr2), ("rtmr3", report.rtmr3), ("reportData", report.reportData),
        ]
        if let svn2 = report.teeTCBSVN2, let service = report.mrServiceTD {
            items += [("teeTcbSvn2", svn2), ("mrServiceTd", service)]
        }
        fields.append(
            ("tdReport", "{" + items.map { "\"\($0.0)\":\"\($0.1.hexString)\"" }.joined(separator: ",") + "}"))
    } else {
        fields.append(("tdReport", "null"))
    }
    return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
}

/// A JSON string literal.
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
