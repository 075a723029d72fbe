import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

/// A fresh software TEE in a temporary directory.
func makeSoftwareTEE(_ options: TestPlatformOptions = .init(), now: Int64 = 1_780_000_000) throws -> SoftwareTEE {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("keyrack-tee-\(UUID().uuidString)")
    return try SoftwareTEE.initialize(directory: directory, options: options, now: now)
}

let teeNow: Int64 = 1_780_000_000
let sampleReportData = [UInt8](0..<64)

@Suite("software TEE")
struct SoftwareTEETests {
    @Test("its quotes verify under its own root, with the report data and measurements asked for")
    func roundTrip() throws {
        let tee = try makeSoftwareTEE()
        let mrtd = [UInt8](repeating: 0xAB, count: 48)
        let rtmr2 = [UInt8](repeating: 0xCD, count: 48)
        let bytes = try tee.quote(reportData: sampleReportData, mrTD: mrtd, rtmrs: [nil, nil, rtmr2, nil])
        let verifier = QuoteVerifier(trustAnchor: tee.trustAnchor)
        let verified = try verifier.verify(quote: bytes, collateral: tee.collateral, now: teeNow)
        #expect(verified.status == .upToDate)
        #expect(verified.advisoryIDs.isEmpty)
        #expect(Array(verified.report.reportData) == sampleReportData)
        #expect(Array(verified.report.mrTD) == mrtd)
        #expect(Array(verified.report.rtmr2) == rtmr2)
        #expect(Array(verified.report.rtmr0) == SoftwareTEE.fixedMeasurements.rtmrs[0])
        #expect(verified.quote.header.version == 4)
        #expect(verified.report.kind == .td10)
    }

    @Test("the directory holds root.der and collateral.json in the shared test data's format")
    func files() throws {
        let tee = try makeSoftwareTEE()
        let root = try #require(
            FileManager.default.contents(atPath: tee.directory.appendingPathComponent("root.der").path))
        #expect(try TrustAnchor(bytes: [UInt8](root)) == tee.trustAnchor)
        let json = try #require(
            FileManager.default.contents(atPath: tee.directory.appendingPathComponent("collateral.json").path))
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: String])
        let shared = try #require(
            try JSONSerialization.jsonObject(with: Data(try TestData.bytes(TestData.v4Collateral))) as? [String: Any])
        #expect(Set(object.keys) == Set(shared.keys))
        let attributes = try FileManager.default.attributesOfItem(
            atPath: tee.directory.appendingPathComponent("tee.json").path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        // Descriptions never show key material.
        #expect(!String(describing: tee).contains(try #require(try jsonStateKey(tee))))
        #expect(String(describing: TestPKIKeys()).contains("redacted"))
        // Reopening gives the same collateral and anchor.
        let reopened = try SoftwareTEE(directory: tee.directory)
        #expect(reopened.collateral == tee.collateral)
    }

    @Test("its quotes are refused under Intel's root")
    func notUnderIntelRoot() throws {
        let tee = try makeSoftwareTEE()
        let bytes = try tee.quote(reportData: sampleReportData)
        #expect(throws: AttestationError.self) {
            try QuoteVerifier().verify(quote: bytes, collateral: tee.collateral, now: teeNow)
        }
    }

    @Test(
        "collateral rating the platform OutOfDate or SWHardeningNeeded gives that status with advisories",
        arguments: [TCBStatus.outOfDate, .swHardeningNeeded, .configurationNeeded])
    func ratedStatus(status: TCBStatus) throws {
        let tee = try makeSoftwareTEE(TestPlatformOptions(tcbStatus: status))
        let verified = try QuoteVerifier(trustAnchor: tee.trustAnchor)
            .verify(quote: try tee.quote(reportData: sampleReportData), collateral: tee.collateral, now: teeNow)
        #expect(verified.status == status)
        #expect(verified.tcb.platformStatus == status)
        #expect(verified.advisoryIDs == ["INTEL-SA-01036", "INTEL-SA-01079"])
    }

    @Test(
        "bad cases are refused at the right step",
        arguments: [
            (
                TestPlatformOptions(revokedPCK: true), false, AttestationError.Code.certificateRevoked,
                AttestationError.Step.pckChain
            ),
            (TestPlatformOptions(expiredCollateral: true), false, .collateralExpired, .tcbInfo),
            (TestPlatformOptions(tcbStatus: .revoked), false, .tcbRevoked, .tcbStatus),
            (TestPlatformOptions(), true, .debugTD, .tdAttributes),
        ])
    func badCases(options: TestPlatformOptions, debug: Bool, code: AttestationError.Code, step: AttestationError.Step)
        throws
    {
        let tee = try makeSoftwareTEE(options)
        let bytes = try tee.quote(reportData: sampleReportData, debug: debug)
        let error = #expect(throws: AttestationError.self) {
            try QuoteVerifier(trustAnchor: tee.trustAnchor).verify(
                quote: bytes, collateral: tee.collateral, now: teeNow)
        }
        #expect(error?.code == code)
        #expect(error?.step == step)
    }

    @Test("bad report data and measurement lengths are refused when quoting")
    func badLengths() throws {
        let tee = try makeSoftwareTEE()
        #expect(throws: AttestationError.self) { try tee.quote(reportData: [1, 2, 3]) }
        #expect(throws: AttestationError.self) { try tee.quote(reportData: sampleReportData, mrTD: [0]) }
        #expect(throws: AttestationError.self) {
            try tee.quote(reportData: sampleReportData, rtmrs: [nil, [1], nil, nil])
        }
    }

    @Test("a missing directory names the init command")
    func missing() {
        let error = #expect(throws: SoftwareTEEError.self) {
            try SoftwareTEE(directory: URL(fileURLWithPath: "/nonexistent-keyrack-tee"))
        }
        #expect(error?.code == .missing)
        #expect(error?.reason.contains("keyrack tee init") == true)
    }
}

/// The hex of the attestation private key in `tee.json`.
func jsonStateKey(_ tee: SoftwareTEE) throws -> String? {
    let data = try Data(contentsOf: tee.directory.appendingPathComponent("tee.json"))
    return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["attestationKey"] as? String
}
