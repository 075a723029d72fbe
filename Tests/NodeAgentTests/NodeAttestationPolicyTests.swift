import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import NodeAgent

@Suite("The node attestation policy file")
struct NodeAttestationPolicyTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("node-policy-\(UUID().uuidString)")

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func write(_ json: String) throws -> URL {
        let url = directory.appendingPathComponent("policy.json")
        try json.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test("the file written for a measurement log and a software TEE loads back to the same policy")
    func roundTrip() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let tee = try SoftwareTEE.initialize(
            directory: directory.appendingPathComponent("tee"), now: Int64(Date().timeIntervalSince1970))
        let log = try MeasurementLog([("executable", Array(repeating: 0xAB, count: 32))])
        let policy = try NodeAttestationPolicy.load(
            contentsOf: write(NodeAttestationPolicy.json(allowing: log, softwareTEE: tee)))
        #expect(policy.mode == .enforce && policy.startupWarning == nil)
        #expect(policy.softwareRootOfTrust == SoftwareMeasurementPolicy(allowing: log))
        let tdx = try #require(policy.tdx)
        #expect(tdx.trustAnchor == tee.trustAnchor)
        let collateral = try #require(
            tdx.collateralDirectory, "the policy does not read the TEE's collateral directory")
        #expect(collateral.byFMSPC.count == 1)
        #expect(tdx.measurements.rules.map(\.field) == ["MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "tcbStatus"])
    }

    @Test("permissive mode, and paths relative to the policy file")
    func permissiveAndRelative() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let tee = try SoftwareTEE.initialize(
            directory: directory.appendingPathComponent("tee"), now: Int64(Date().timeIntervalSince1970))
        let measurements = tee.defaultMeasurements
        let rtmrs = measurements.rtmrs.enumerated().map { "\"rtmr\($0.offset)\": [\"\($0.element.hexString)\"]" }
        let policy = try NodeAttestationPolicy.load(
            contentsOf: write(
                """
                {"mode": "permissive",
                 "tdx": {"trustAnchor": "tee/root.der", "collateralDirectory": "tee",
                         "allow": {"mrtd": ["\(measurements.mrTD.hexString)"], \(rtmrs.joined(separator: ", ")),
                                   "tcbStatus": ["UpToDate"]}}}
                """))
        #expect(policy.mode == .permissive)
        #expect(policy.startupWarning?.contains("NOT ENFORCED") == true)
        #expect(policy.tdx?.trustAnchor == tee.trustAnchor)
        #expect(policy.softwareRootOfTrust == nil)
    }

    @Test(
        "a broken policy is a clear error naming what is wrong",
        arguments: [
            ("", "not valid JSON", .syntax),
            ("[]", "must be a JSON object", .syntax),
            ("{}", "accepts no evidence", .invalid),
            (#"{"mode": "enforcing", "softwareRootOfTrust": {"allow": {}}}"#, "'mode' must be", .invalid),
            (#"{"softwareRootOfTrust": {"allow": {}}, "tdxx": {}}"#, "unknown field 'tdxx'", .unknownField),
            (#"{"softwareRootOfTrust": {"alow": {}}}"#, "unknown field 'softwareRootOfTrust.alow'", .unknownField),
            (#"{"softwareRootOfTrust": {}}"#, "'softwareRootOfTrust.allow' is missing", .missing),
            (#"{"softwareRootOfTrust": {"allow": {"executable": ["abcd"]}}}"#, "64 hex characters", .invalid),
            (
                #"{"softwareRootOfTrust": {"allow": {"executable": "abababababababababababababababababababababababababababababababab"}}}"#,
                "must be a list",
                .invalid
            ),
            (#"{"tdx": {"collateralDirectory": ".", "allow": {}}}"#, "'tdx.trustAnchor' is missing", .missing),
            (
                #"{"tdx": {"trustAnchor": "nowhere.der", "collateralDirectory": ".", "allow": {}}}"#,
                "cannot read the TDX trust anchor",
                .trustAnchor
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "collateralDirectory": ".", "allow": {}}}"#,
                "no collateral document", .collateral
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "allow": {}}}"#, "exactly one of 'collateralDirectory' and 'pccs'",
                .invalid
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "collateralDirectory": ".", "pccs": "https://pccs:8081", "allow": {}}}"#,
                "exactly one of 'collateralDirectory' and 'pccs'",
                .invalid
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "pccs": "pccs:8081", "allow": {}}}"#,
                "must be an https:// (or http://) URL",
                .invalid
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "pccs": "ftp://pccs/", "allow": {}}}"#,
                "must be an https:// (or http://) URL",
                .invalid
            ),
        ] as [(String, String, NodeAttestationPolicyErrorCode)])
    func broken(json: String, expected: String, code: NodeAttestationPolicyErrorCode) throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try write(json)
        let error = #expect(throws: NodeAttestationPolicyError.self) { try NodeAttestationPolicy.load(contentsOf: url) }
        #expect(error?.code == code)
        // The reason names the file and what is wrong in it.
        let reason = error?.reason ?? ""
        #expect(reason.contains(url.path) && reason.contains(expected), "\(reason)")
    }

    @Test("the TDX allowlists are the KMS policy format, checked the same way")
    func tdxAllow() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let tee = try SoftwareTEE.initialize(
            directory: directory.appendingPathComponent("tee"), now: Int64(Date().timeIntervalSince1970))
        let json = NodeAttestationPolicy.json(allowing: nil, softwareTEE: tee)
            .replacingOccurrences(of: "\"UpToDate\"", with: "\"Revoked\"")
        let error = #expect(throws: NodeAttestationPolicyError.self) {
            try NodeAttestationPolicy.load(contentsOf: write(json))
        }
        #expect(error?.code == .invalid)
        // The KMS policy's own reason, under the field it came from.
        #expect(error?.reason.contains("'tdx.allow': 'tcbStatus' entry 'Revoked'") == true)
    }

    @Test("a missing policy file is a clear error")
    func missingFile() {
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("absent.json")
        let error = #expect(throws: NodeAttestationPolicyError.self) { try NodeAttestationPolicy.load(contentsOf: url) }
        #expect(error?.code == .notFound)
        #expect(error?.reason == "no node attestation policy at \(url.path)")
    }
}
