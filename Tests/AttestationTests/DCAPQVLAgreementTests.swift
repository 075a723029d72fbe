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
        #expect(used == Set(known.keys), "known differences that name no matrix case")
    }
}
