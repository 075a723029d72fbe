import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import Attestation

/// dcap-qvl 0.7.0's Python binding, run on many quote/collateral pairs in one process.
enum DCAPQVL {
    /// Reads `[{quote, collateral, root, now}]` (paths) as JSON on standard
    /// input and prints `[{ok, status, advisoryIds} | {ok: false, error}]`.
    static let script = """
        import json, sys
        try:
            import dcap_qvl
        except ImportError:
            sys.stderr.write("dcap-qvl is not installed: run `pip install dcap-qvl==0.7.0`\\n")
            sys.exit(3)
        if getattr(dcap_qvl, "__version__", "0.7.0") != "0.7.0":
            sys.stderr.write("dcap-qvl %s is installed, the cross-check needs 0.7.0: run `pip install dcap-qvl==0.7.0`\\n" % dcap_qvl.__version__)
            sys.exit(3)
        out = []
        for case in json.load(sys.stdin):
            quote = open(case["quote"], "rb").read()
            collateral = dcap_qvl.QuoteCollateralV3.from_json(open(case["collateral"]).read())
            root = open(case["root"], "rb").read()
            try:
                report = dcap_qvl.verify_with_root_ca(quote, collateral, root, int(case["now"]))
                out.append({"ok": True, "status": report.status, "advisoryIds": list(report.advisory_ids)})
            except Exception as error:
                out.append({"ok": False, "error": str(error)})
        print(json.dumps(out))
        """

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// dcap-qvl's verdicts, in order. Throws, naming `pip install dcap-qvl==0.7.0`, when it is missing.
    static func verdicts(_ cases: [[String: Any]]) async throws -> [[String: Any]] {
        let payload = try JSONSerialization.data(withJSONObject: cases)
        // On a thread of its own: a child that runs for seconds must not hold
        // one of the cooperative pool's threads, which every async test shares.
        let result = try await offCooperativePool {
            try runProcessBlocking(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script], input: payload)
        }
        let data = result.output
        guard result.status == 0 else {
            let errorText = String(decoding: result.errors, as: UTF8.self)
            throw Failure(
                description:
                    "the dcap-qvl cross-check could not run: \(errorText) (install Python 3, then `pip install dcap-qvl==0.7.0`)"
            )
        }
        guard let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw Failure(description: "dcap-qvl printed no verdict list")
        }
        return list
    }

    /// The known differences, `Tests/AttestationData/known-differences.json`
    /// (expected.json's format): case name → dcap-qvl's recorded verdict.
    static func knownDifferences() throws -> [String: [String: Any]] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("AttestationData/known-differences.json")
        let data = try Data(contentsOf: url)
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try #require(root["cases"] as? [String: [String: Any]])
    }
}

@Suite("dcap-qvl 0.7.0 agrees with the verifier on the software-TEE matrix")
struct DCAPQVLAgreementTests {
    @Test("case by case, except the recorded known differences")
    func agreement() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "keyrack-qvl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var inputs: [[String: Any]] = []
        var ours: [Outcome] = []
        for (index, rule) in RuleMatrix.cases.enumerated() {
            let (quote, collateral, root) = try rule.material()
            let base = directory.appendingPathComponent("\(index)")
            try Data(quote).write(to: base.appendingPathExtension("quote"))
            try collateral.jsonData().write(to: base.appendingPathExtension("json"))
            try Data(root).write(to: base.appendingPathExtension("der"))
            inputs.append([
                "quote": base.appendingPathExtension("quote").path,
                "collateral": base.appendingPathExtension("json").path,
                "root": base.appendingPathExtension("der").path, "now": RuleMatrix.now,
            ])
            ours.append(try rule.verdict())
        }
        let theirs = try await DCAPQVL.verdicts(inputs)
        try #require(theirs.count == RuleMatrix.cases.count)
        let known = try DCAPQVL.knownDifferences()
        var used = Set<String>()
        for (index, rule) in RuleMatrix.cases.enumerated() {
            let verdict = theirs[index]
            let ok = verdict["ok"] as? Bool == true
            if let difference = known[rule.name] {
                used.insert(rule.name)
                // The difference is still what was recorded, on both sides.
                let recorded = try #require(difference["dcap_qvl"] as? [String: Any], "\(rule.name)")
                #expect(ok == (recorded["result"] as? String == "ok"), "\(rule.name): dcap-qvl now says \(verdict)")
                if ok { #expect(verdict["status"] as? String == recorded["status"] as? String, "\(rule.name)") }
                let keyrack = try #require(difference["keyrack"] as? [String: Any], "\(rule.name)")
                let accepted: Bool = if case .accepted = ours[index] { true } else { false }
                #expect(accepted == (keyrack["result"] as? String == "ok"), "\(rule.name): ours \(ours[index])")
                continue
            }
            switch ours[index] {
            case .accepted(let status, let ids):
                #expect(ok, "\(rule.name): ours \(ours[index]), dcap-qvl \(verdict)")
                #expect(verdict["status"] as? String == status.rawValue, "\(rule.name): dcap-qvl \(verdict)")
                #expect(verdict["advisoryIds"] as? [String] == ids, "\(rule.name): dcap-qvl \(verdict)")
            case .refused:
                #expect(!ok, "\(rule.name): ours \(ours[index]), dcap-qvl \(verdict)")
            }
        }
        #expect(
            used == Set(known.keys.filter { !$0.hasPrefix(Self.crafted) }), "known differences that name no matrix case"
        )
    }

    /// The prefix of the recorded cases built from a lab PKI rather than the software TEE's options.
    static let crafted = "crafted: "

    /// The stricter rules of the spec that need a crafted collateral or quote: each Keyrack verdict, and dcap-qvl's as recorded.
    static func craftedCases() throws -> [(
        name: String, lab: Lab, collateral: Collateral, quote: [UInt8]?, ours: Outcome
    )] {
        let lab = try Lab()
        let c = lab.pki.collateral
        let pckCAChain = PEM.encode([try TestPKI.der(lab.pki.pckCA), try TestPKI.der(lab.pki.root)])
        let tcbByPCKCA = Collateral(
            pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
            tcbInfoIssuerChain: pckCAChain, tcbInfo: c.tcbInfo,
            tcbInfoSignature: Array(try lab.keys.pckCA.signature(for: Array(c.tcbInfo.utf8)).rawRepresentation),
            qeIdentityIssuerChain: c.qeIdentityIssuerChain, qeIdentity: c.qeIdentity,
            qeIdentitySignature: c.qeIdentitySignature)
        let qeByPCKCA = Collateral(
            pckCRLIssuerChain: c.pckCRLIssuerChain, rootCACRL: c.rootCACRL, pckCRL: c.pckCRL,
            tcbInfoIssuerChain: c.tcbInfoIssuerChain, tcbInfo: c.tcbInfo, tcbInfoSignature: c.tcbInfoSignature,
            qeIdentityIssuerChain: pckCAChain, qeIdentity: c.qeIdentity,
            qeIdentitySignature: Array(try lab.keys.pckCA.signature(for: Array(c.qeIdentity.utf8)).rawRepresentation))
        // A PCK CRL whose issuer chain names a CA that is not the PCK's: the CRL is signed by the TCB signing key.
        let tcbCRL = try TestPKI.crl(
            issuer: lab.pki.tcbSigning.subject, key: lab.keys.tcbSigning, thisUpdate: lab.now - 3_600,
            nextUpdate: lab.now + 86_400, revoked: [])
        let otherIssuer = try lab.collateral(pckCRL: tcbCRL, pckCRLIssuerChain: c.tcbInfoIssuerChain)
        // Quotes crafted at the byte level: a PCK chain whose root has the anchor's names and another
        // key (another lab's quote), and certification data of type 5 (a bare PCK chain) at the top.
        let otherRoot = try Lab().quote
        var typeFive = lab.quote
        typeFive[QuoteParserTests.certificationType] = 5
        typeFive[QuoteParserTests.certificationType + 1] = 0
        return [
            (
                "\(crafted)TCB info signed by the PCK platform CA", lab, tcbByPCKCA, nil,
                .refused(.untrustedChain, .tcbInfo)
            ),
            (
                "\(crafted)QE identity signed by the PCK platform CA", lab, qeByPCKCA, nil,
                .refused(.untrustedChain, .qeIdentity)
            ),
            (
                "\(crafted)a PCK CRL from another issuer than the PCK's CA", lab, otherIssuer, nil,
                .refused(.crlMissing, .pckChain)
            ),
            (
                "\(crafted)a PCK chain whose root has the anchor's names and another key", lab, c, otherRoot,
                .refused(.invalidSignature, .pckChain)
            ),
            (
                "\(crafted)certification data type 5 at the top of the signature data", lab, c, typeFive,
                .refused(.unsupported, .parseQuote)
            ),
        ]
    }

    @Test(
        "the spec's stricter rules on crafted collateral and quotes: Keyrack refuses; dcap-qvl agrees unless a difference is recorded"
    )
    func stricter() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "keyrack-qvl-crafted-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let cases = try Self.craftedCases()
        var inputs: [[String: Any]] = []
        for (index, crafted) in cases.enumerated() {
            let ours: Outcome
            do {
                let verified = try crafted.lab.verify(crafted.collateral, quote: crafted.quote)
                ours = .accepted(verified.status, verified.advisoryIDs)
            } catch let error as AttestationError {
                ours = .refused(error.code, error.step)
            }
            #expect(ours == crafted.ours, "\(crafted.name)")
            let base = directory.appendingPathComponent("\(index)")
            try Data(crafted.quote ?? crafted.lab.quote).write(to: base.appendingPathExtension("quote"))
            try crafted.collateral.jsonData().write(to: base.appendingPathExtension("json"))
            try Data(try TestPKI.der(crafted.lab.pki.root)).write(to: base.appendingPathExtension("der"))
            inputs.append([
                "quote": base.appendingPathExtension("quote").path,
                "collateral": base.appendingPathExtension("json").path,
                "root": base.appendingPathExtension("der").path, "now": crafted.lab.now,
            ])
        }
        let theirs = try await DCAPQVL.verdicts(inputs)
        try #require(theirs.count == cases.count)
        let known = try DCAPQVL.knownDifferences()
        for (index, crafted) in cases.enumerated() {
            let verdict = theirs[index]
            let ok = verdict["ok"] as? Bool == true
            if let difference = known[crafted.name] {
                let recorded = try #require(difference["dcap_qvl"] as? [String: Any], "\(crafted.name)")
                #expect(ok == (recorded["result"] as? String == "ok"), "\(crafted.name): dcap-qvl now says \(verdict)")
                if ok { #expect(verdict["status"] as? String == recorded["status"] as? String, "\(crafted.name)") }
            } else {
                // Not recorded: dcap-qvl refuses too.
                #expect(!ok, "\(crafted.name): dcap-qvl says \(verdict)")
            }
        }
        #expect(
            Set(known.keys.filter { $0.hasPrefix(Self.crafted) }).isSubset(of: cases.map(\.name)),
            "crafted known differences that name no crafted case")
    }
}
