import ArgumentParser
import Attestation
import Foundation
import KeyrackCore
import SecretSharing

/// `keyrack tee`: a software TEE that issues real-format TDX quotes under a test PKI.
struct TeeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tee",
        abstract: "A software TEE for machines without TDX: a test PKI like Intel's and real-format v4 quotes.",
        discussion: """
            Its quotes verify only with its own root as the trust anchor \
            (`keyrack attest verify --trust-anchor D/root.der`). Test material only: the \
            directory holds private keys.
            """,
        subcommands: [Init.self, QuoteCommand.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the test PKI and collateral; write D/root.der, D/collateral.json and D/tee.json.",
            discussion: """
                The options make the bad cases tests need: a revoked PCK certificate, collateral \
                that rates the platform OutOfDate or SWHardeningNeeded (or any TCB status), and \
                expired collateral. Collateral is issued as of --now (default: now) and is valid \
                for 30 days; certificates for 10 years.
                """
        )

        @Option(help: "The directory (created if missing).") var dir: String
        @Option(help: "The TCB status the collateral gives the platform (UpToDate, SWHardeningNeeded, OutOfDate, ...).")
        var tcbStatus: String = TCBStatus.upToDate.rawValue
        @Flag(help: "Put the PCK certificate on the PCK CRL.") var revokedPck = false
        @Flag(help: "Issue TCB info and QE identity that expired 30 days ago.") var expiredCollateral = false
        @Option(help: "Issue as of this Unix time (default: now).") var now: Int64?

        func run() throws {
            try reportingFailures {
                guard let status = TCBStatus(rawValue: tcbStatus) else {
                    throw CommandFailure(
                        "unknown TCB status \(tcbStatus); one of: \(TCBStatus.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                let directory = URL(fileURLWithPath: dir)
                try SoftwareTEE.initialize(
                    directory: directory,
                    options: TestPlatformOptions(
                        tcbStatus: status, revokedPCK: revokedPck, expiredCollateral: expiredCollateral),
                    now: now ?? Int64(Date().timeIntervalSince1970))
                try writeStandardOutput(
                    "wrote \(dir)/root.der, \(dir)/collateral.json and \(dir)/tee.json (mode 0600, test keys)\n")
            }
        }
    }

    struct QuoteCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "quote",
            abstract: "Write a v4 TDX quote over the given report data and measurements to standard output.",
            discussion: "Measurements not given default to the fixed values stored in D/tee.json."
        )

        @Option(help: "The directory made by `keyrack tee init`.") var dir: String
        @Option(help: "REPORTDATA, 64 bytes in hex.") var reportData: String
        @Option(help: "MRTD, 48 bytes in hex.") var mrtd: String?
        @Option(help: "RTMR0, 48 bytes in hex.") var rtmr0: String?
        @Option(help: "RTMR1, 48 bytes in hex.") var rtmr1: String?
        @Option(help: "RTMR2, 48 bytes in hex.") var rtmr2: String?
        @Option(help: "RTMR3, 48 bytes in hex.") var rtmr3: String?
        @Flag(help: "Mark the TD as a debug TD (TDATTRIBUTES.DEBUG).") var debug = false

        func run() throws {
            try reportingFailures {
                func decode(_ text: String?, _ name: String, _ count: Int) throws -> [UInt8]? {
                    guard let text else { return nil }
                    guard let bytes = [UInt8](hex: text), bytes.count == count else {
                        throw CommandFailure("--\(name) must be \(count) bytes of hex (\(count * 2) digits)")
                    }
                    return bytes
                }
                let tee = try SoftwareTEE(directory: URL(fileURLWithPath: dir))
                let quote = try tee.quote(
                    reportData: try decode(reportData, "report-data", 64) ?? [],
                    mrTD: try decode(mrtd, "mrtd", 48),
                    rtmrs: [
                        try decode(rtmr0, "rtmr0", 48), try decode(rtmr1, "rtmr1", 48), try decode(rtmr2, "rtmr2", 48),
                        try decode(rtmr3, "rtmr3", 48),
                    ],
                    debug: debug)
                try quote.withUnsafeBytes { try writeStandardOutput($0) }
            }
        }
    }
}
