import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import Testing
import X509

@testable import Attestation

/// A test PKI whose collateral can be re-issued with any change, for the
/// error paths the software TEE's options do not reach.
struct Lab {
    let keys = TestPKIKeys()
    let now: Int64 = 1_780_000_000
    let pki: TestPKI
    let quote: [UInt8]

    init(debug: Bool = false) throws {
        pki = try TestPKI(keys: keys, options: .init(), now: now)
        quote = try QuoteWriter.quote(
            keys: keys, pckChainPEM: try pki.pckChainPEM(), reportData: sampleReportData,
            measurements: SoftwareTEE.fixedMeasurements, debug: debug)
    }

    var anchor: TrustAnchor { get throws { try TrustAnchor(bytes: try TestPKI.der(pki.root)) } }

    /// The collateral with the TCB info and QE identity JSON edited and re-signed.
    func collateral(
        tcbInfo edit: (String) -> String = { $0 }, qeIdentity editQE: (String) -> String = { $0 },
        rootCRL: [UInt8]? = nil, pckCRL: [UInt8]? = nil, pckCRLIssuerChain: String? = nil
    ) throws -> Collateral {
        let c = pki.collateral
        let tcb = edit(c.tcbInfo)
        let qe = editQE(c.qeIdentity)
        return Collateral(
            pckCRLIssuerChain: pckCRLIssuerChain ?? c.pckCRLIssuerChain, rootCACRL: rootCRL ?? c.rootCACRL,
            pckCRL: pckCRL ?? c.pckCRL, tcbInfoIssuerChain: c.tcbInfoIssuerChain, tcbInfo: tcb,
            tcbInfoSignature: Array(try keys.tcbSigning.signature(for: Array(tcb.utf8)).rawRepresentation),
            qeIdentityIssuerChain: c.qeIdentityIssuerChain, qeIdentity: qe,
            qeIdentitySignature: Array(try keys.tcbSigning.signature(for: Array(qe.utf8)).rawRepresentation))
    }

    func verify(_ collateral: Collateral, at time: Int64? = nil, quote: [UInt8]? = nil) throws -> VerifiedQuote {
        try QuoteVerifier(trustAnchor: try anchor).verify(
            quote: quote ?? self.quote, collateral: collateral, now: time ?? now)
    }

    func expectFailure(
        _ collateral: Collateral, at time: Int64? = nil, quote: [UInt8]? = nil, _ code: AttestationError.Code,
        _ step: AttestationError.Step, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let error = #expect(throws: AttestationError.self, comment, sourceLocation: sourceLocation) {
            try verify(collateral, at: time, quote: quote)
        }
        #expect(error?.code == code, "\(comment): \(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.step == step, "\(comment): \(String(describing: error))", sourceLocation: sourceLocation)
    }
}

func iso(_ seconds: Int64) -> String { formatISO8601(seconds) }

@Suite("DCAP rules, one error path each")
struct DCAPRuleTests {
    @Test("the lab's own collateral verifies (the baseline every case below changes one thing of)")
    func baseline() throws {
        let lab = try Lab()
        #expect(try lab.verify(try lab.collateral()).status == .upToDate)
    }

    @Test("one list of rules: the TCB status is a step of it, after the collateral and quote rules, before the TD's")
    func ruleList() throws {
        let kinds = QuoteVerifier.steps.map { step -> String in
            switch step {
            case .rule(let rule): return String(describing: type(of: rule))
            case .tcbStatus: return "TCBStatusRule"
            }
        }
        #expect(kinds.filter { $0 == "TCBStatusRule" }.count == 1)
        let status = try #require(kinds.firstIndex(of: "TCBStatusRule"))
        #expect(try #require(kinds.firstIndex(of: "QuoteSignatureRule")) < status)
        #expect(try #require(kinds.firstIndex(of: "TDXModuleSignerRule")) < status)
        #expect(try #require(kinds.firstIndex(of: "MRServiceTDRule")) == status + 1)
        #expect(kinds.firstIndex(of: "SEPTVEDisableRule") == kinds.count - 1)
    }

    @Test("TCB status rule: TCB info kind, FMSPC, PCE-ID, TDX module identity and its levels")
    func tcbStatusRule() throws {
        let lab = try Lab()
        let cases: [(String, (String) -> String, AttestationError.Code)] = [
            ("SGX TCB info", { $0.replacingOccurrences(of: "\"id\":\"TDX\"", with: "\"id\":\"SGX\"") }, .mismatch),
            (
                "FMSPC",
                { $0.replacingOccurrences(of: "\"fmspc\":\"00906ED50000\"", with: "\"fmspc\":\"00906ED50001\"") },
                .mismatch
            ),
            ("PCE-ID", { $0.replacingOccurrences(of: "\"pceId\":\"0000\"", with: "\"pceId\":\"0100\"") }, .mismatch),
            (
                "no identity for module TDX_01", { $0.replacingOccurrences(of: "TDX_01", with: "TDX_02") },
                .noMatchingTCBLevel
            ),
            (
                "module MRSIGNER",
                {
                    $0.replacingOccurrences(
                        of: "\"id\":\"TDX_01\",\"mrsigner\":\"00", with: "\"id\":\"TDX_01\",\"mrsigner\":\"01")
                },
                .mismatch
            ),
            (
                "module SEAMATTRIBUTES",
                {
                    $0.replacingOccurrences(
                        of:
                            "\"attributes\":\"0000000000000000\",\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"id\":\"TDX_01\"",
                        with:
                            "\"attributes\":\"0100000000000000\",\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"id\":\"TDX_01\""
                    )
                },
                .mismatch
            ),
            (
                "module ISVSVN too low", { $0.replacingOccurrences(of: "\"isvsvn\":4", with: "\"isvsvn\":9") },
                .noMatchingTCBLevel
            ),
            (
                "PCESVN too low", { $0.replacingOccurrences(of: "\"pcesvn\":13", with: "\"pcesvn\":14") },
                .noMatchingTCBLevel
            ),
        ]
        for (name, edit, code) in cases {
            let collateral = try lab.collateral(tcbInfo: edit)
            #expect(collateral.tcbInfo != lab.pki.collateral.tcbInfo, "\(name): edit did not apply")
            lab.expectFailure(collateral, code, .tcbStatus, "\(name)")
        }
    }

    @Test("QE identity rule: id, MRSIGNER, ISVPRODID, MISCSELECT, ATTRIBUTES, QE TCB level")
    func qeIdentityRule() throws {
        let lab = try Lab()
        let cases: [(String, (String) -> String, AttestationError.Code)] = [
            ("id", { $0.replacingOccurrences(of: "\"id\":\"TD_QE\"", with: "\"id\":\"QE\"") }, .mismatch),
            ("MRSIGNER", { $0.replacingOccurrences(of: "\"mrsigner\":\"DC", with: "\"mrsigner\":\"DD") }, .mismatch),
            ("ISVPRODID", { $0.replacingOccurrences(of: "\"isvprodid\":2", with: "\"isvprodid\":3") }, .mismatch),
            (
                "MISCSELECT",
                { $0.replacingOccurrences(of: "\"miscselect\":\"00000000\"", with: "\"miscselect\":\"01000000\"") },
                .mismatch
            ),
            (
                "ATTRIBUTES", { $0.replacingOccurrences(of: "\"attributes\":\"11", with: "\"attributes\":\"13") },
                .mismatch
            ),
            (
                "QE ISVSVN too low", { $0.replacingOccurrences(of: "\"isvsvn\":4", with: "\"isvsvn\":5") },
                .noMatchingTCBLevel
            ),
        ]
        for (name, edit, code) in cases {
            let collateral = try lab.collateral(qeIdentity: edit)
            #expect(collateral.qeIdentity != lab.pki.collateral.qeIdentity, "\(name): edit did not apply")
            lab.expectFailure(collateral, code, .qeIdentityMatch, "\(name)")
        }
    }

    @Test("dates: QE identity not yet valid and expired, CRL not yet valid, certificate not yet valid")
    func dates() throws {
        let lab = try Lab()
        let now = lab.now
        let futureQE = try lab.collateral(qeIdentity: {
            $0.replacingOccurrences(of: iso(now - 3_600), with: iso(now + 60))
        })
        lab.expectFailure(futureQE, .collateralNotYetValid, .qeIdentity, "QE identity issued in the future")
        let staleQE = try lab.collateral(qeIdentity: {
            $0.replacingOccurrences(of: iso(now + 30 * 86_400), with: iso(now - 60))
        })
        lab.expectFailure(staleQE, .collateralExpired, .qeIdentity, "QE identity expired")

        // TCB info and QE identity issued before the CRLs: between the two, the CRLs are not yet valid.
        let early = try lab.collateral(
            tcbInfo: { $0.replacingOccurrences(of: iso(now - 3_600), with: iso(now - 7_200)) },
            qeIdentity: { $0.replacingOccurrences(of: iso(now - 3_600), with: iso(now - 7_200)) })
        lab.expectFailure(early, at: now - 5_000, .crlNotYetValid, .crl, "CRL thisUpdate after now")

        // Everything issued before the certificates' notBefore (now - 1 day).
        let rootName = lab.pki.root.subject
        let caName = lab.pki.pckCA.subject
        let rootCRL = try TestPKI.crl(
            issuer: rootName, key: lab.keys.root, thisUpdate: now - 200_000, nextUpdate: now + 86_400, revoked: [])
        let pckCRL = try TestPKI.crl(
            issuer: caName, key: lab.keys.pckCA, thisUpdate: now - 200_000, nextUpdate: now + 86_400, revoked: [])
        let before = try lab.collateral(
            tcbInfo: { $0.replacingOccurrences(of: iso(now - 3_600), with: iso(now - 200_000)) },
            qeIdentity: { $0.replacingOccurrences(of: iso(now - 3_600), with: iso(now - 200_000)) },
            rootCRL: rootCRL, pckCRL: pckCRL)
        lab.expectFailure(before, at: now - 100_000, .certificateExpired, .crl, "certificates not yet valid")
    }

    @Test("CRLs: missing for an issuer, not signed by the issuer, revoked intermediate")
    func crls() throws {
        let lab = try Lab()
        let now = lab.now
        // A PCK CRL from the TCB signing key: nothing speaks for the PCK platform CA.
        let tcbCRL = try TestPKI.crl(
            issuer: lab.pki.tcbSigning.subject, key: lab.keys.tcbSigning, thisUpdate: now - 3_600,
            nextUpdate: now + 86_400, revoked: [])
        let missing = try lab.collateral(pckCRL: tcbCRL, pckCRLIssuerChain: lab.pki.collateral.tcbInfoIssuerChain)
        lab.expectFailure(missing, .crlMissing, .pckChain, "no CRL from the PCK platform CA")

        // A PCK CRL with the right name signed by another key.
        let forged = try TestPKI.crl(
            issuer: lab.pki.pckCA.subject, key: P256.Signing.PrivateKey(), thisUpdate: now - 3_600,
            nextUpdate: now + 86_400, revoked: [])
        lab.expectFailure(try lab.collateral(pckCRL: forged), .invalidSignature, .crl, "forged PCK CRL")

        // The PCK CRL and its issuer chain from another PKI with the same names: valid on their
        // own, but they do not speak for this quote's platform CA.
        let twinKey = P256.Signing.PrivateKey()
        let twin = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(twinKey.publicKey),
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(now + 86_400)), issuer: lab.pki.root.subject,
            subject: lab.pki.pckCA.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            },
            issuerPrivateKey: .init(lab.keys.root))
        let twinCRL = try TestPKI.crl(
            issuer: lab.pki.pckCA.subject, key: twinKey, thisUpdate: now - 3_600, nextUpdate: now + 86_400, revoked: [])
        let foreign = try lab.collateral(
            pckCRL: twinCRL, pckCRLIssuerChain: PEM.encode([try TestPKI.der(twin), try TestPKI.der(lab.pki.root)]))
        lab.expectFailure(foreign, .crlMissing, .pckChain, "a CRL with the issuer's name from another key")

        // The root CRL revokes the PCK platform CA.
        let revokeCA = try TestPKI.crl(
            issuer: lab.pki.root.subject, key: lab.keys.root, thisUpdate: now - 3_600, nextUpdate: now + 86_400,
            revoked: [lab.pki.pckCA.serialNumber.bytes])
        lab.expectFailure(try lab.collateral(rootCRL: revokeCA), .certificateRevoked, .crl, "revoked platform CA")

        // The root CRL lists the root itself.
        let revokeRoot = try TestPKI.crl(
            issuer: lab.pki.root.subject, key: lab.keys.root, thisUpdate: now - 3_600, nextUpdate: now + 86_400,
            revoked: [lab.pki.root.serialNumber.bytes])
        lab.expectFailure(try lab.collateral(rootCRL: revokeRoot), .certificateRevoked, .crl, "revoked root")
    }

    @Test("TCB info and QE identity signed by a PCK CA or a PCK key (chaining to the root) are refused")
    func signerMustBeTCBSigning() throws {
        let lab = try Lab()
        let c = lab.pki.collateral
        let pckCAChain = PEM.encode([try TestPKI.der(lab.pki.pckCA), try TestPKI.der(lab.pki.root)])
        let pckChain = try lab.pki.pckChainPEM()
        // An "UpToDate" TCB info signed by a platform's own keys.
        for (name, key, chain) in [("PCK CA", lab.keys.pckCA, pckCAChain), ("PCK leaf", lab.keys.pck, pckChain)] {
            let forgedTCB = Collateral(
                pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
                tcbInfoIssuerChain: chain, tcbInfo: c.tcbInfo,
                tcbInfoSignature: Array(try key.signature(for: Array(c.tcbInfo.utf8)).rawRepresentation),
                qeIdentityIssuerChain: c.qeIdentityIssuerChain, qeIdentity: c.qeIdentity,
                qeIdentitySignature: c.qeIdentitySignature)
            lab.expectFailure(forgedTCB, .untrustedChain, .tcbInfo, "TCB info signed by the \(name)")
            let forgedQE = Collateral(
                pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
                tcbInfoIssuerChain: c.tcbInfoIssuerChain, tcbInfo: c.tcbInfo, tcbInfoSignature: c.tcbInfoSignature,
                qeIdentityIssuerChain: chain, qeIdentity: c.qeIdentity,
                qeIdentitySignature: Array(try key.signature(for: Array(c.qeIdentity.utf8)).rawRepresentation))
            lab.expectFailure(forgedQE, .untrustedChain, .qeIdentity, "QE identity signed by the \(name)")
        }
    }

    @Test("signed JSON that does not decode is refused after its signature checks")
    func undecodableJSON() throws {
        let lab = try Lab()
        lab.expectFailure(try lab.collateral(tcbInfo: { _ in "{}" }), .decodingFailed, .tcbInfo, "empty TCB info")
        lab.expectFailure(
            try lab.collateral(tcbInfo: { $0.replacingOccurrences(of: "\"issueDate\":\"", with: "\"issueDate\":\"x") }),
            .decodingFailed, .tcbInfo, "bad date")
        lab.expectFailure(
            try lab.collateral(tcbInfo: { $0.replacingOccurrences(of: "{\"svn\":0}]", with: "]") }), .decodingFailed,
            .tcbInfo, "15 components")
        lab.expectFailure(
            try lab.collateral(tcbInfo: {
                $0.replacingOccurrences(of: "\"fmspc\":\"00906ED50000\"", with: "\"fmspc\":\"00\"")
            }),
            .decodingFailed, .tcbInfo, "short FMSPC")
        lab.expectFailure(
            try lab.collateral(qeIdentity: { _ in "[]" }), .decodingFailed, .qeIdentity, "QE identity array")
        lab.expectFailure(
            try lab.collateral(qeIdentity: { $0.replacingOccurrences(of: "\"mrsigner\":\"DC", with: "\"mrsigner\":\"") }
            ),
            .decodingFailed, .qeIdentity, "short MRSIGNER")
        lab.expectFailure(
            try lab.collateral(qeIdentity: {
                $0.replacingOccurrences(of: "\"isvprodid\":2", with: "\"isvprodid\":70000")
            }),
            .decodingFailed, .qeIdentity, "ISVPRODID out of range")
        lab.expectFailure(
            try lab.collateral(qeIdentity: {
                $0.replacingOccurrences(of: "\"nextUpdate\":\"", with: "\"nextUpdate\":\"2")
            }),
            .decodingFailed, .qeIdentity, "bad QE date")
    }

    @Test("a chain to another root, and a trust anchor that is not a P-256 certificate")
    func anchors() throws {
        let lab = try Lab()
        let other = try Lab()
        let error = #expect(throws: AttestationError.self) {
            try lab.verify(lab.pki.collateral, quote: other.quote)
        }
        // Same names, other keys: the PCK chain's top does not verify under this anchor.
        #expect(error?.code == .invalidSignature)
        #expect(error?.step == .pckChain)
        // A chain whose top names another issuer altogether.
        let intel = try Quote(bytes: try TestData.bytes(TestData.v4Quote))
        let untrusted = #expect(throws: AttestationError.self) {
            try lab.verify(lab.pki.collateral, quote: intel.bytes)
        }
        #expect(untrusted?.code == .untrustedChain)
        #expect(untrusted?.step == .pckChain)
        #expect(throws: AttestationError.self) { try TrustAnchor(bytes: [0x30, 0x03, 0x02, 0x01, 0x00]) }
        #expect(throws: AttestationError.self) { try TrustAnchor(bytes: Array("not pem".utf8)) }
        // PEM anchors work like DER ones.
        let pem = PEM.encode([try TestPKI.der(lab.pki.root)])
        #expect(try TrustAnchor(bytes: Array(pem.utf8)) == lab.anchor)
    }

    @Test("caching: a second verification is answered from the cache and gives the same verdict")
    func caching() throws {
        let lab = try Lab()
        let cache = VerificationCache()
        let verifier = QuoteVerifier(trustAnchor: try lab.anchor, cache: cache)
        let first = try verifier.verify(quote: lab.quote, collateral: lab.pki.collateral, now: lab.now)
        let counts = cache.counts
        #expect(counts.collateral == 1)
        #expect(counts.chains >= 3)
        let hitsBefore = cache.statistics.hits
        let second = try verifier.verify(quote: lab.quote, collateral: lab.pki.collateral, now: lab.now)
        #expect(first.status == second.status)
        #expect(cache.statistics.hits >= hitsBefore + 3)
        #expect(cache.counts.collateral == counts.collateral)
        // Time is never cached: the same verifier refuses the same quote once the collateral expires.
        #expect(throws: AttestationError.self) {
            try verifier.verify(quote: lab.quote, collateral: lab.pki.collateral, now: lab.now + 31 * 86_400)
        }
        // Nor is one anchor's result reused under another.
        let foreign = QuoteVerifier(trustAnchor: .intelSGXRootCA, cache: cache)
        #expect(throws: AttestationError.self) {
            try foreign.verify(quote: lab.quote, collateral: lab.pki.collateral, now: lab.now)
        }
        // A full table is emptied, not grown.
        let small = VerificationCache(capacity: 1)
        let bounded = QuoteVerifier(trustAnchor: try lab.anchor, cache: small)
        _ = try bounded.verify(quote: lab.quote, collateral: lab.pki.collateral, now: lab.now)
        #expect(small.counts.chains <= 1)
        #expect(small.counts.signatures <= 1)
        small.removeAll()
        #expect(small.counts.collateral == 0)
    }

    @Test("TCB status convergence: only an OutOfDate or Revoked component changes the platform's status")
    func merging() {
        #expect(TCBStatus.upToDate.converged(withComponent: .outOfDate) == .outOfDate)
        #expect(TCBStatus.configurationNeeded.converged(withComponent: .outOfDate) == .outOfDateConfigurationNeeded)
        #expect(
            TCBStatus.configurationAndSWHardeningNeeded.converged(withComponent: .outOfDate)
                == .outOfDateConfigurationNeeded)
        #expect(TCBStatus.swHardeningNeeded.converged(withComponent: .outOfDate) == .outOfDate)
        #expect(TCBStatus.outOfDate.converged(withComponent: .revoked) == .revoked)
        // A QE or module that needs configuration does not lower the platform.
        #expect(TCBStatus.upToDate.converged(withComponent: .configurationNeeded) == .upToDate)
        #expect(TCBStatus.swHardeningNeeded.converged(withComponent: .configurationNeeded) == .swHardeningNeeded)
        #expect(TCBStatus.upToDate.converged(withComponent: .outOfDateConfigurationNeeded) == .upToDate)
        for status in TCBStatus.allCases { #expect(status.converged(withComponent: .upToDate) == status) }
    }

    @Test("relaunch check: an out-of-date launch with a current module not out of date")
    func relaunch() {
        #expect(TCBStatus.outOfDate.relaunchChecked(current: .upToDate) == .tdRelaunchAdvised)
        #expect(TCBStatus.outOfDate.relaunchChecked(current: .swHardeningNeeded) == .tdRelaunchAdvised)
        #expect(
            TCBStatus.outOfDate.relaunchChecked(current: .configurationNeeded) == .tdRelaunchAdvisedConfigurationNeeded)
        #expect(
            TCBStatus.outOfDateConfigurationNeeded.relaunchChecked(current: .upToDate)
                == .tdRelaunchAdvisedConfigurationNeeded)
        #expect(TCBStatus.outOfDate.relaunchChecked(current: .outOfDate) == .outOfDate)
        #expect(TCBStatus.upToDate.relaunchChecked(current: .upToDate) == .upToDate)
        #expect(TCBStatus.configurationNeeded.relaunchChecked(current: .upToDate) == .configurationNeeded)
    }

    @Test("collateral directory: indexed by FMSPC, other JSON skipped, lookup by the quote's FMSPC")
    func directory() throws {
        let lab = try Lab()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-coll-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try lab.pki.collateral.jsonData().write(to: dir.appendingPathComponent("a.json"))
        try Data(try TestData.bytes(TestData.v4Collateral)).write(to: dir.appendingPathComponent("intel.json"))
        try Data("{\"not\":\"collateral\"}".utf8).write(to: dir.appendingPathComponent("policy.json"))
        try Data("ignored".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        try FileManager.default.createDirectory(
            at: dir.appendingPathComponent("folder.json"), withIntermediateDirectories: true)
        let loaded = try CollateralDirectory(directory: dir)
        #expect(Set(loaded.byFMSPC.keys) == ["00906ED50000", "B0C06F000000"])
        #expect(loaded.skipped.map(\.file) == ["folder.json", "policy.json"])
        #expect(try loaded.collateral(for: try Quote(bytes: lab.quote)) == lab.pki.collateral)
        let intel = try Quote(bytes: try TestData.bytes(TestData.v4Quote))
        #expect(try loaded.collateral(for: intel).fmspc() == "B0C06F000000")
        let v5 = try Quote(bytes: try TestData.bytes("tdx_v5_td15.quote"))
        let error = #expect(throws: AttestationError.self) { try loaded.collateral(for: v5) }
        #expect(error?.code == .mismatch)
        #expect(throws: AttestationError.self) {
            try CollateralDirectory(directory: dir.appendingPathComponent("missing"))
        }
    }
}
