import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

/// Agreement with `expected.json`: every parsed field and every verdict of
/// dcap-qvl 0.7.0 at the three instants.
@Suite("expected.json agreement")
struct ExpectedVerdictTests {
    static let tdxCases = ["tdx_v4_uptodate", "tdx_v5_td15"]

    @Test("parsed header, FMSPC and TD report fields", arguments: tdxCases)
    func parsedFields(name: String) throws {
        let expected = try #require(try TestData.expected()[name] as? [String: Any])
        let bytes = try TestData.bytes(try #require(expected["quote"] as? String))
        #expect(bytes.count == expected["size"] as? Int)
        let quote = try Quote(bytes: bytes)
        let header = try #require(expected["header"] as? [String: Any])
        #expect(Int(quote.header.version) == header["version"] as? Int)
        #expect(Int(quote.header.attestationKeyType) == header["attestation_key_type"] as? Int)
        #expect(Int(quote.header.teeType) == header["tee_type"] as? Int)
        #expect(Int(quote.header.qeSVN) == header["qe_svn"] as? Int)
        #expect(Int(quote.header.pceSVN) == header["pce_svn"] as? Int)
        #expect(quote.header.qeVendorID.hexString == header["qe_vendor_id"] as? String)
        #expect(quote.header.userData.hexString == header["user_data"] as? String)
        #expect(try quote.unverifiedPCKExtensions().fmspc.hexString.uppercased() == expected["fmspc"] as? String)

        let fields = try #require(expected["td_report"] as? [String: String])
        let report = quote.report
        let ours: [String: ArraySlice<UInt8>] = [
            "tee_tcb_svn": report.teeTCBSVN, "mr_seam": report.mrSeam, "mr_signer_seam": report.mrSignerSeam,
            "seam_attributes": report.seamAttributes, "td_attributes": report.tdAttributes, "xfam": report.xfam,
            "mr_td": report.mrTD, "mr_config_id": report.mrConfigID, "mr_owner": report.mrOwner,
            "mr_owner_config": report.mrOwnerConfig, "rt_mr0": report.rtmr0, "rt_mr1": report.rtmr1,
            "rt_mr2": report.rtmr2, "rt_mr3": report.rtmr3, "report_data": report.reportData,
        ]
        #expect(Set(fields.keys) == Set(ours.keys))
        for (key, value) in fields {
            #expect(ours[key]?.hexString == value, "\(name).\(key)")
        }
    }

    /// Maps dcap-qvl's error text to the code and step we must report.
    static func expectedError(_ text: String) -> AttestationError? {
        if text.contains("TCBInfo issue date is in the future") {
            return AttestationError(.collateralNotYetValid, step: .tcbInfo, "")
        }
        if text.contains("CrlExpired") { return AttestationError(.crlExpired, step: .crl, "") }
        if text.contains("No matching TCB level found") {
            return AttestationError(.noMatchingTCBLevel, step: .tcbStatus, "")
        }
        return nil
    }

    @Test(
        "verdict at each of the three instants, sequential and with the parallel cold path",
        arguments: tdxCases, [false, true])
    func verdicts(name: String, parallel: Bool) async throws {
        let expected = try #require(try TestData.expected()[name] as? [String: Any])
        let bytes = try TestData.bytes(try #require(expected["quote"] as? String))
        let collateral = try TestData.collateral(try #require(expected["collateral"] as? String))
        let instants = try #require(expected["verify"] as? [[String: Any]])
        #expect(instants.count == 3)
        for instant in instants {
            // A fresh cache per instant, so that each one is a cold verification.
            let verifier = QuoteVerifier()
            try await check(instant, name: name) { now in
                parallel
                    ? try await verifier.verifyConcurrently(
                        quote: try Quote(bytes: bytes), collateral: collateral, now: now)
                    : try verifier.verify(quote: bytes, collateral: collateral, now: now)
            }
        }
    }

    private func check(
        _ instant: [String: Any], name: String, verify: (Int64) async throws -> VerifiedQuote
    ) async throws {
        let now = Int64(try #require(instant["now"] as? Int))
        let label = instant["label"] as? String ?? "?"
        if instant["result"] as? String == "ok" {
            let verified = try await verify(now)
            #expect(verified.status.rawValue == instant["status"] as? String, "\(name) \(label)")
            #expect(verified.advisoryIDs == instant["advisory_ids"] as? [String], "\(name) \(label)")
        } else {
            let text = try #require(instant["error"] as? String)
            let wanted = try #require(Self.expectedError(text), "unmapped dcap-qvl error: \(text)")
            let error = await #expect(throws: AttestationError.self, "\(name) \(label)") {
                try await verify(now)
            }
            #expect(error == wanted, "\(name) \(label): \(String(describing: error)) vs \(text)")
        }
    }

    @Test("the SGX v3 quote is rejected as not a TDX quote, by the parser and the verifier")
    func sgxRejected() throws {
        let bytes = try TestData.bytes("sgx_v3.quote")
        let parse = #expect(throws: AttestationError.self) { try Quote(bytes: bytes) }
        #expect(parse?.code == .notTDXQuote)
        #expect(parse?.description.contains("not a TDX quote") == true)
        let collateral = try TestData.collateral("sgx_v3.collateral.json")
        let verify = #expect(throws: AttestationError.self) {
            try QuoteVerifier().verify(quote: bytes, collateral: collateral, now: 1_750_334_171)
        }
        #expect(verify?.code == .notTDXQuote)
        #expect(verify?.step == .parseQuote)
    }

    @Test("v4: layout, padding and the verified values a KMS reads")
    func v4Details() throws {
        let quote = try Quote(bytes: try TestData.bytes(TestData.v4Quote))
        #expect(quote.report.kind == .td10)
        #expect(quote.bodyType == nil)
        #expect(quote.signedLength == 48 + 584)
        #expect(quote.paddingLength == 70)
        #expect(quote.signatureData.qeAuthData.count == 32)
        let verified = try QuoteVerifier().verify(
            quote: quote, collateral: try TestData.collateral(TestData.v4Collateral), now: TestData.v4Now)
        #expect(verified.status == .upToDate)
        #expect(verified.tcb.moduleStatus == .upToDate)
        #expect(verified.platform.pceSVN == 11)
        #expect(verified.platform.fmspc.hexString == "b0c06f000000")
        #expect(verified.platform.cpuSVN == verified.platform.tcbComponents)
    }

    @Test("v5: a TD 1.5 body with the v5 type and size in the signed bytes")
    func v5Details() throws {
        let quote = try Quote(bytes: try TestData.bytes("tdx_v5_td15.quote"))
        #expect(quote.bodyType == 3)
        #expect(quote.report.kind == .td15)
        #expect(quote.signedLength == 48 + 6 + 648)
        #expect(quote.report.mrServiceTD?.allSatisfy { $0 == 0 } == true)
        #expect(quote.report.teeTCBSVN2?.count == 16)
        #expect(quote.paddingLength == 0)
    }
}
