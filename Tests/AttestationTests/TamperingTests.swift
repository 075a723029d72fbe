import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

/// A byte flipped in each region of the real v4 quote or its collateral is
/// rejected at the step that guards that region.
@Suite("tampering")
struct TamperingTests {
    static let quoteBytes: [UInt8] = (try? TestData.bytes(TestData.v4Quote)) ?? []
    static let collateral: Collateral? = try? TestData.collateral(TestData.v4Collateral)
    /// One verifier for the whole suite: cached results must not hide tampering.
    static let verifier = QuoteVerifier()

    /// Offsets (absolute, in the quote) of one byte of each region.
    static func quoteRegions() throws -> [(String, Int, AttestationError.Step)] {
        let quote = try Quote(bytes: quoteBytes)
        let r = quote.report
        let s = quote.signatureData
        var regions: [(String, Int, AttestationError.Step)] = [
            ("header: QE SVN", 8, .quoteSignature),
            ("header: QE vendor id", 20, .qeIdentityMatch),
            ("header: user data", 30, .quoteSignature),
            ("TEE_TCB_SVN", r.teeTCBSVN.startIndex + 3, .quoteSignature),
            ("MRSEAM", r.mrSeam.startIndex + 5, .quoteSignature),
            ("MRSIGNERSEAM", r.mrSignerSeam.startIndex, .quoteSignature),
            ("TDATTRIBUTES", r.tdAttributes.startIndex + 1, .quoteSignature),
            ("XFAM", r.xfam.startIndex, .quoteSignature),
            ("MRTD", r.mrTD.startIndex + 47, .quoteSignature),
            ("MRCONFIGID", r.mrConfigID.startIndex, .quoteSignature),
            ("MROWNER", r.mrOwner.startIndex, .quoteSignature),
            ("MROWNERCONFIG", r.mrOwnerConfig.startIndex, .quoteSignature),
            ("RTMR0", r.rtmr0.startIndex + 1, .quoteSignature),
            ("RTMR1", r.rtmr1.startIndex + 2, .quoteSignature),
            ("RTMR2", r.rtmr2.startIndex + 3, .quoteSignature),
            ("RTMR3", r.rtmr3.startIndex + 4, .quoteSignature),
            ("report data", r.reportData.startIndex + 10, .quoteSignature),
            ("quote signature (r)", s.signature.startIndex + 5, .quoteSignature),
            ("quote signature (s)", s.signature.startIndex + 40, .quoteSignature),
            ("attestation key", s.attestationKey.startIndex + 7, .attestationKeyBinding),
            ("QE report: CPUSVN", s.qeReport.bytes.startIndex, .qeReportSignature),
            ("QE report: MRSIGNER", s.qeReport.mrSigner.startIndex, .qeReportSignature),
            ("QE report: report data", s.qeReport.reportData.startIndex, .qeReportSignature),
            ("QE report signature", s.qeReportSignature.startIndex + 9, .qeReportSignature),
            ("QE auth data", s.qeAuthData.startIndex + 3, .attestationKeyBinding),
        ]
        // One base64 character in the middle of each certificate of the PCK chain.
        let pem = Array(s.pckChainPEM)
        let begin = Array("-----BEGIN CERTIFICATE-----".utf8)
        var starts: [Int] = []
        for i in 0..<(pem.count - begin.count) where Array(pem[i..<(i + begin.count)]) == begin { starts.append(i) }
        #expect(starts.count == 3)
        for (n, start) in starts.enumerated() {
            let name = ["PCK leaf certificate", "PCK platform CA certificate", "root certificate in the chain"][n]
            var offset = start + begin.count + 400
            while !(pem[offset] >= UInt8(ascii: "C") && pem[offset] <= UInt8(ascii: "Y")) { offset += 1 }
            regions.append((name, s.pckChainPEM.startIndex + offset, .pckChain))
        }
        return regions
    }

    @Test("each region of the quote")
    func quoteRegions() throws {
        let collateral = try #require(Self.collateral)
        // The untouched quote verifies (with the same verifier and cache).
        _ = try Self.verifier.verify(quote: Self.quoteBytes, collateral: collateral, now: TestData.v4Now)
        for (name, offset, step) in try Self.quoteRegions() {
            var bytes = Self.quoteBytes
            let original = bytes[offset]
            // Letters in the PEM stay base64 letters; other bytes flip a bit.
            bytes[offset] = (original >= 0x41 && original <= 0x5A) ? original ^ 0x02 : original ^ 0x01
            let error = #expect(throws: AttestationError.self, "\(name)") {
                try Self.verifier.verify(quote: bytes, collateral: collateral, now: TestData.v4Now)
            }
            #expect(error?.step == step, "\(name): \(String(describing: error))")
        }
    }

    @Test("each region of the quote, cold, with the parallel cold path: same steps")
    func quoteRegionsParallel() async throws {
        let collateral = try #require(Self.collateral)
        for (name, offset, step) in try Self.quoteRegions() {
            var bytes = Self.quoteBytes
            let original = bytes[offset]
            bytes[offset] = (original >= 0x41 && original <= 0x5A) ? original ^ 0x02 : original ^ 0x01
            let error = await #expect(throws: AttestationError.self, "\(name)") {
                try await QuoteVerifier().verifyConcurrently(
                    quote: try Quote(bytes: bytes), collateral: collateral, now: TestData.v4Now)
            }
            #expect(error?.step == step, "\(name): \(String(describing: error))")
        }
        let good = try await QuoteVerifier().verifyConcurrently(
            quote: try Quote(bytes: Self.quoteBytes), collateral: collateral, now: TestData.v4Now)
        #expect(good.status == .upToDate)
    }

    static func flipped(_ bytes: [UInt8], at offset: Int) -> [UInt8] {
        var copy = bytes
        copy[offset] ^= 0x01
        return copy
    }

    static func flippedText(_ text: String, near fraction: Double) -> String {
        var bytes = Array(text.utf8)
        var i = Int(Double(bytes.count) * fraction)
        while !(bytes[i] >= UInt8(ascii: "C") && bytes[i] <= UInt8(ascii: "Y")) { i += 1 }
        bytes[i] ^= 0x02
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("each part of the collateral")
    func collateralParts() throws {
        let c = try #require(Self.collateral)
        func with(
            pckCRLIssuerChain: String? = nil, rootCACRL: [UInt8]? = nil, pckCRL: [UInt8]? = nil,
            tcbInfoIssuerChain: String? = nil, tcbInfo: String? = nil, tcbInfoSignature: [UInt8]? = nil,
            qeIdentityIssuerChain: String? = nil, qeIdentity: String? = nil, qeIdentitySignature: [UInt8]? = nil
        ) -> Collateral {
            Collateral(
                pckCRLIssuerChain: pckCRLIssuerChain ?? c.pckCRLIssuerChain, rootCACRL: rootCACRL ?? c.rootCACRL,
                pckCRL: pckCRL ?? c.pckCRL, tcbInfoIssuerChain: tcbInfoIssuerChain ?? c.tcbInfoIssuerChain,
                tcbInfo: tcbInfo ?? c.tcbInfo, tcbInfoSignature: tcbInfoSignature ?? c.tcbInfoSignature,
                qeIdentityIssuerChain: qeIdentityIssuerChain ?? c.qeIdentityIssuerChain,
                qeIdentity: qeIdentity ?? c.qeIdentity,
                qeIdentitySignature: qeIdentitySignature ?? c.qeIdentitySignature)
        }
        let cases: [(String, Collateral, AttestationError.Step, AttestationError.Code?)] = [
            (
                "TCB info", with(tcbInfo: c.tcbInfo.replacingOccurrences(of: "\"pcesvn\":11", with: "\"pcesvn\":10")),
                .tcbInfo, .invalidSignature
            ),
            (
                "TCB info signature", with(tcbInfoSignature: Self.flipped(c.tcbInfoSignature, at: 40)), .tcbInfo,
                .invalidSignature
            ),
            (
                "TCB signing certificate", with(tcbInfoIssuerChain: Self.flippedText(c.tcbInfoIssuerChain, near: 0.25)),
                .tcbInfo, nil
            ),
            (
                "root in the TCB info chain",
                with(tcbInfoIssuerChain: Self.flippedText(c.tcbInfoIssuerChain, near: 0.75)),
                .tcbInfo, nil
            ),
            (
                "QE identity",
                with(qeIdentity: c.qeIdentity.replacingOccurrences(of: "\"isvsvn\":4", with: "\"isvsvn\":3")),
                .qeIdentity, .invalidSignature
            ),
            (
                "QE identity signature", with(qeIdentitySignature: Self.flipped(c.qeIdentitySignature, at: 3)),
                .qeIdentity, .invalidSignature
            ),
            (
                "QE identity signing certificate",
                with(qeIdentityIssuerChain: Self.flippedText(c.qeIdentityIssuerChain, near: 0.3)), .qeIdentity, nil
            ),
            ("root CA CRL", with(rootCACRL: Self.flipped(c.rootCACRL, at: c.rootCACRL.count - 10)), .crl, nil),
            ("PCK CRL", with(pckCRL: Self.flipped(c.pckCRL, at: c.pckCRL.count - 10)), .crl, nil),
            ("PCK CRL entry", with(pckCRL: Self.flipped(c.pckCRL, at: c.pckCRL.count / 2)), .crl, nil),
            (
                "PCK CRL issuer certificate", with(pckCRLIssuerChain: Self.flippedText(c.pckCRLIssuerChain, near: 0.3)),
                .crl, nil
            ),
        ]
        for (name, collateral, step, code) in cases {
            #expect(collateral != c, "\(name) was not changed")
            let error = #expect(throws: AttestationError.self, "\(name)") {
                try Self.verifier.verify(quote: Self.quoteBytes, collateral: collateral, now: TestData.v4Now)
            }
            #expect(error?.step == step, "\(name): \(String(describing: error))")
            if let code { #expect(error?.code == code, "\(name): \(String(describing: error))") }
        }
    }

    @Test("a quote with a valid chain for another platform (the software TEE's) is refused with this collateral")
    func foreignChain() throws {
        let tee = try makeSoftwareTEE()
        let foreign = try tee.quote(reportData: sampleReportData)
        let error = #expect(throws: AttestationError.self) {
            try Self.verifier.verify(quote: foreign, collateral: try #require(Self.collateral), now: TestData.v4Now)
        }
        #expect(error?.step == .pckChain)
    }
}
