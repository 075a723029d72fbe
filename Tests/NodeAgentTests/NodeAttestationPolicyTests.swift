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
            ("", "not valid JSON"),
            ("[]", "must be a JSON object"),
            ("{}", "accepts no evidence"),
            (#"{"mode": "enforcing", "softwareRootOfTrust": {"allow": {}}}"#, "'mode' must be"),
            (#"{"softwareRootOfTrust": {"allow": {}}, "tdxx": {}}"#, "unknown field 'tdxx'"),
            (#"{"softwareRootOfTrust": {"alow": {}}}"#, "unknown field 'softwareRootOfTrust.alow'"),
            (#"{"softwareRootOfTrust": {}}"#, "'softwareRootOfTrust.allow' is missing"),
            (#"{"softwareRootOfTrust": {"allow": {"executable": ["abcd"]}}}"#, "64 hex characters"),
            (
                #"{"softwareRootOfTrust": {"allow": {"executable": "abababababababababababababababababababababababababababababababab"}}}"#,
                "must be a list"
            ),
            (#"{"tdx": {"collateralDirectory": ".", "allow": {}}}"#, "'tdx.trustAnchor' is missing"),
            (
                #"{"tdx": {"trustAnchor": "nowhere.der", "collateralDirectory": ".", "allow": {}}}"#,
                "cannot read the TDX trust anchor"
            ),
            (#"{"tdx": {"trustAnchor": "intel", "collateralDirectory": ".", "allow": {}}}"#, "no collateral document"),
            (#"{"tdx": {"trustAnchor": "intel", "allow": {}}}"#, "exactly one of 'collateralDirectory' and 'pccs'"),
            (
                #"{"tdx": {"trustAnchor": "intel", "collateralDirectory": ".", "pccs": "https://pccs:8081", "allow": {}}}"#,
                "exactly one of 'collateralDirectory' and 'pccs'"
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "pccs": "pccs:8081", "allow": {}}}"#,
                "must be an https:// (or http://) URL"
            ),
            (
                #"{"tdx": {"trustAnchor": "intel", "pccs": "ftp://pccs/", "allow": {}}}"#,
                "must be an https:// (or http://) URL"
            ),
        ])
    func broken(json: String, expected: String) throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try write(json)
        #expect {
            try NodeAttestationPolicy.load(contentsOf: url)
        } throws: { error in
            let reason = (error as? NodeAttestationPolicyError)?.reason ?? ""
            return reason.contains(url.path) && reason.contains(expected)
        }
    }

    @Test("the TDX allowlists are the KMS policy format, checked the same way")
    func tdxAllow() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let tee = try SoftwareTEE.initialize(
            directory: directory.appendingPathComponent("tee"), now: Int64(Date().timeIntervalSince1970))
        let json = NodeAttestationPolicy.json(allowing: nil, softwareTEE: tee)
            .replacingOccurrences(of: "\"UpToDate\"", with: "\"Revoked\"")
        #expect {
            try NodeAttestationPolicy.load(contentsOf: write(json))
        } throws: { error in
            (error as? NodeAttestationPolicyError)?.reason.contains("'tdx.allow': 'tcbStatus' entry 'Revoked'") == true
        }
    }

    @Test("a missing policy file is a clear error")
    func missingFile() {
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("absent.json")
        #expect(throws: NodeAttestationPolicyError("no node attestation policy at \(url.path)")) {
            try NodeAttestationPolicy.load(contentsOf: url)
        }
    }
}
