import ArgumentParser
import Attestation
import Foundation
import KeyrackCore
import SecretSharing

/// `keyrack tee`: a software TEE that issues real-format TDX quotes under a test PKI.
struct TeeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tee",
        abstract: "A software TEE for machines without TDX: a test PKI like Intel's and real-format v4 and v5 quotes.",
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
                expired collateral. Collateral is issued as of --now (default: now), --issued-ago \
                seconds before it, and is valid for --valid-for seconds (30 days; CRLs \
                --crl-valid-for); certificates for 10 years.

                --tcb-levels FILE describes the TCB info and QE identity (every key optional):

                  {"tcbLevels": [{"tdx": [5, 0, 4], "status": "UpToDate"},
                                 {"tdx": [5, 0, 3], "status": "OutOfDate", "advisories": ["INTEL-SA-01079"]}],
                   "tdxModuleIdentities": [{"id": "TDX_01", "levels": [{"isvsvn": 5, "status": "UpToDate"},
                                                                      {"isvsvn": 2, "status": "OutOfDate"}]}],
                   "qeLevels": [{"isvsvn": 4, "status": "ConfigurationNeeded"}],
                   "tdxModule": null,
                   "tcbInfo": {"tcbEvaluationDataNumber": null}, "qeIdentity": {}}

                A platform level's "sgx" and "tdx" are SVN lists (padded with zeros; default: the \
                platform's CPUSVN 3,3,2,2,4,1,0,5 and TDX components 5,0,3), "pcesvn" defaults to \
                13, "tcbDate" to 2024-03-13T00:00:00Z; a level in Intel's own form (with "tcb") is \
                kept as written. Module identities default to a zero MRSIGNERSEAM, zero attributes \
                and a full mask ("mrsigner", "attributes", "attributesMask" override). Without \
                "tdxModuleIdentities" there is one, TDX_01, UpToDate from ISVSVN 4; the QE (ISVSVN \
                4) is UpToDate. "tdxModule": null leaves it out. "tcbInfo" and "qeIdentity" replace \
                top-level fields of the signed documents (null removes one). The platform's \
                quotes carry TEE_TCB_SVN 05 01 03 (module ISVSVN 5, version 1) unless `tee quote \
                --tee-tcb-svn` says otherwise.
                """
        )

        @Option(help: "The directory (created if missing).") var dir: String
        @Option(help: "The TCB status the collateral gives the platform (UpToDate, SWHardeningNeeded, OutOfDate, ...).")
        var tcbStatus: String = TCBStatus.upToDate.rawValue
        @Flag(help: "Put the PCK certificate on the PCK CRL.") var revokedPck = false
        @Flag(help: "Issue TCB info and QE identity that expired 30 days ago.") var expiredCollateral = false
        @Option(help: "Issue as of this Unix time (default: now).") var now: Int64?
        @Option(help: "A JSON description of the TCB levels, module identities and QE levels (see above).")
        var tcbLevels: String?
        @Option(help: "TCB info, QE identity and CRLs are issued this many seconds before --now.")
        var issuedAgo: Int64 = 3_600
        @Option(help: "TCB info and QE identity are valid this many seconds after --now (negative: expired).")
        var validFor: Int64 = 30 * 86_400
        @Option(help: "The CRLs are valid this many seconds after --now.") var crlValidFor: Int64 = 30 * 86_400
        @Option(help: "The CRLs are issued this many seconds before --now (default: --issued-ago; negative: later).")
        var crlIssuedAgo: Int64?

        func run() throws {
            try reportingFailures {
                guard let status = TCBStatus(rawValue: tcbStatus) else {
                    throw CommandFailure(
                        "unknown TCB status \(tcbStatus); one of: \(TCBStatus.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                let directory = URL(fileURLWithPath: dir)
                var options = TestPlatformOptions(
                    tcbStatus: status, revokedPCK: revokedPck, expiredCollateral: expiredCollateral)
                if let tcbLevels {
                    guard let data = FileManager.default.contents(atPath: tcbLevels) else {
                        throw CommandFailure("cannot read --tcb-levels \(tcbLevels)")
                    }
                    options.tcbLevels = String(decoding: data, as: UTF8.self)
                }
                options.issuedAgo = issuedAgo
                options.collateralValidFor = validFor
                options.crlValidFor = crlValidFor
                options.crlIssuedAgo = crlIssuedAgo
                try SoftwareTEE.initialize(
                    directory: directory, options: options, now: now ?? Int64(Date().timeIntervalSince1970))
                try writeStandardOutput(
                    "wrote \(dir)/root.der, \(dir)/collateral.json and \(dir)/tee.json (mode 0600, test keys)\n")
            }
        }
    }

    struct QuoteCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "quote",
            abstract: "Write a TDX quote over the given report data and measurements to standard output.",
            discussion: """
                Measurements not given default to the fixed values stored in D/tee.json. The \
                shape options make the quotes the DCAP rules grade: --version 5 --body td15 \
                (or td15ex, v5 body type 4) with --tee-tcb-svn2 and --mr-service-td; \
                --td-attributes (default 0000001000000000, SEPT_VE_DISABLE only); \
                --tee-tcb-svn (default 05010300000000000000000000000000); --seam-attributes; \
                --mr-signer-seam; --trailing-bytes. Hex values are little-endian byte strings as \
                in the quote.
                """
        )

        @Option(help: "The directory made by `keyrack tee init`.") var dir: String
        @Option(help: "REPORTDATA, 64 bytes in hex.") var reportData: String
        @Option(help: "MRTD, 48 bytes in hex.") var mrtd: String?
        @Option(help: "RTMR0, 48 bytes in hex.") var rtmr0: String?
        @Option(help: "RTMR1, 48 bytes in hex.") var rtmr1: String?
        @Option(help: "RTMR2, 48 bytes in hex.") var rtmr2: String?
        @Option(help: "RTMR3, 48 bytes in hex.") var rtmr3: String?
        @Flag(help: "Mark the TD as a debug TD (TDATTRIBUTES.DEBUG).") var debug = false
        @Option(help: "Quote version, 4 or 5.") var version: UInt16 = 4
        @Option(help: "Body: td10, td15 or td15ex (td15 and td15ex need --version 5).") var body: String = "td10"
        @Option(help: "TDATTRIBUTES, 8 bytes in hex (as in the quote, little-endian).") var tdAttributes: String?
        @Option(help: "TEE_TCB_SVN, 16 bytes in hex.") var teeTcbSvn: String?
        @Option(help: "TEE_TCB_SVN2, 16 bytes in hex (TD 1.5; default: TEE_TCB_SVN).") var teeTcbSvn2: String?
        @Option(help: "MRSERVICETD, 48 bytes in hex (TD 1.5; default: zero).") var mrServiceTd: String?
        @Option(help: "SEAMATTRIBUTES, 8 bytes in hex.") var seamAttributes: String?
        @Option(help: "MRSIGNERSEAM, 48 bytes in hex.") var mrSignerSeam: String?
        @Option(help: "Bytes appended after the signature data, in hex.") var trailingBytes: String?

        func run() throws {
            try reportingFailures {
                func decode(_ text: String?, _ name: String, _ count: Int) throws -> [UInt8]? {
                    guard let text else { return nil }
                    guard let bytes = [UInt8](hex: text), bytes.count == count else {
                        throw CommandFailure("--\(name) must be \(count) bytes of hex (\(count * 2) digits)")
                    }
                    return bytes
                }
                guard let bodyKind = QuoteShape.Body(rawValue: body) else {
                    throw CommandFailure("--body must be td10, td15 or td15ex, not \(body)")
                }
                var shape = QuoteShape()
                shape.version = version
                shape.body = bodyKind
                if let attributes = try decode(tdAttributes, "td-attributes", 8) {
                    shape.tdAttributes = attributes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
                }
                if let value = try decode(teeTcbSvn, "tee-tcb-svn", 16) { shape.teeTCBSVN = value }
                shape.teeTCBSVN2 = try decode(teeTcbSvn2, "tee-tcb-svn2", 16)
                if let value = try decode(mrServiceTd, "mr-service-td", 48) { shape.mrServiceTD = value }
                if let value = try decode(seamAttributes, "seam-attributes", 8) { shape.seamAttributes = value }
                if let value = try decode(mrSignerSeam, "mr-signer-seam", 48) { shape.mrSignerSeam = value }
                if let text = trailingBytes {
                    guard let value = [UInt8](hex: text) else { throw CommandFailure("--trailing-bytes must be hex") }
                    shape.trailingBytes = value
                }
                let tee = try SoftwareTEE(directory: URL(fileURLWithPath: dir))
                let quote = try tee.quote(
                    reportData: try decode(reportData, "report-data", 64) ?? [],
                    mrTD: try decode(mrtd, "mrtd", 48),
                    rtmrs: [
                        try decode(rtmr0, "rtmr0", 48), try decode(rtmr1, "rtmr1", 48), try decode(rtmr2, "rtmr2", 48),
                        try decode(rtmr3, "rtmr3", 48),
                    ],
                    debug: debug, shape: shape)
                try quote.withUnsafeBytes { try writeStandardOutput($0) }
            }
        }
    }
}
