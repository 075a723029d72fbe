import Foundation
import KeyrackTestSupport
import Testing

/// The shared TDX test data, `<repo>/../shared/testdata/tdx`.
private let tdxData = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/testdata/tdx")
private let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

private func tdx(_ name: String) -> String { tdxData.appendingPathComponent(name).path }

private func temporaryDirectory() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-cli-\(UUID().uuidString)")
}

private func jsonObject(_ result: ProcessResult) throws -> [String: Any] {
    let object = try JSONSerialization.jsonObject(with: result.standardOutput)
    return try #require(object as? [String: Any], "not a JSON object: \(result.output)")
}

private let teeNow = "1780000000"
private let reportData = String(repeating: "5a", count: 32) + String(repeating: "a5", count: 32)

/// `keyrack tee init` (with `options`) and `keyrack tee quote`; the quote file's path.
private func softwareTEEQuote(_ directory: URL, init options: [String] = [], quote extra: [String] = []) async throws
    -> String
{
    let made = try await runKeyrack(["tee", "init", "--dir", directory.path, "--now", teeNow] + options)
    #expect(made.status == 0, "\(made.standardError)")
    let quote = try await runKeyrack(["tee", "quote", "--dir", directory.path, "--report-data", reportData] + extra)
    #expect(quote.status == 0, "\(quote.standardError)")
    let path = directory.appendingPathComponent("quote.bin").path
    try quote.standardOutput.write(to: URL(fileURLWithPath: path))
    return path
}

@Suite("keyrack attest, tee and bench verify, through the real binary")
struct AttestCLITests {
    @Test("attest verify --json accepts the v4 quote in its window: exit 0, status and every measurement")
    func acceptV4() async throws {
        let result = try await runKeyrack([
            "attest", "verify", "--quote", tdx("tdx_v4_uptodate.quote"), "--collateral",
            tdx("tdx_v4_uptodate.collateral.json"), "--now", "1750332747", "--json",
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let object = try jsonObject(result)
        #expect(Set(object.keys) == ["ok", "status", "advisoryIds", "error", "tdReport"])
        #expect(object["ok"] as? Bool == true)
        #expect(object["status"] as? String == "UpToDate")
        #expect((object["advisoryIds"] as? [String])?.isEmpty == true)
        #expect(object["error"] is NSNull)
        let report = try #require(object["tdReport"] as? [String: String])
        #expect(
            report["mrTd"]
                == "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")
        #expect(report["rtmr3"] == String(repeating: "0", count: 96))
        #expect(report.keys.contains("reportData") && report.keys.contains("rtmr0") && report.keys.contains("xfam"))
    }

    @Test("attest verify rejects with exit 1 and names the step: expired CRL, SGX quote, no TCB level")
    func rejections() async throws {
        let cases: [([String], String)] = [
            (["tdx_v4_uptodate.quote", "tdx_v4_uptodate.collateral.json", "1784889147"], "CRL"),
            (["sgx_v3.quote", "sgx_v3.collateral.json", "1750334171"], "not a TDX quote"),
            (["tdx_v5_td15.quote", "tdx_v5_td15.collateral.json", "1771415931"], "no matching TCB level"),
            (["tdx_v5_td15.quote", "tdx_v5_td15.collateral.json", "1771325931"], "TCB info issue date"),
        ]
        for (files, needle) in cases {
            let result = try await runKeyrack([
                "attest", "verify", "--quote", tdx(files[0]), "--collateral", tdx(files[1]), "--now", files[2],
                "--json",
            ])
            #expect(result.status == 1, "\(files)")
            let object = try jsonObject(result)
            #expect(object["ok"] as? Bool == false)
            #expect(object["status"] is NSNull)
            #expect((object["error"] as? String)?.contains(needle) == true, "\(String(describing: object["error"]))")
        }
        // Without --json: one line.
        let plain = try await runKeyrack([
            "attest", "verify", "--quote", tdx("sgx_v3.quote"), "--collateral", tdx("sgx_v3.collateral.json"),
        ])
        #expect(plain.status == 1)
        #expect(plain.output.hasPrefix("rejected: parse quote: not a TDX quote"))
    }

    @Test("attest verify: usage errors exit 2")
    func usage() async throws {
        let missing = try await runKeyrack(["attest", "verify", "--quote", tdx("tdx_v4_uptodate.quote")])
        #expect(missing.status == 2)
        #expect(missing.standardError.contains("--collateral"))
        let unknown = try await runKeyrack(["attest", "verify", "--bogus"])
        #expect(unknown.status == 2)
        let badNow = try await runKeyrack([
            "attest", "verify", "--quote", "q", "--collateral", "c", "--now", "yesterday",
        ])
        #expect(badNow.status == 2)
        let unreadable = try await runKeyrack([
            "attest", "verify", "--quote", "/nonexistent", "--collateral", "/nonexistent",
        ])
        #expect(unreadable.status == 2)
        #expect(unreadable.standardError.contains("cannot read the quote file"))
    }

    @Test("tee init and quote, then attest verify with the software TEE's root; refused under Intel's")
    func softwareTEE() async throws {
        let directory = temporaryDirectory()
        let quote = try await softwareTEEQuote(
            directory,
            quote: ["--mrtd", String(repeating: "11", count: 48), "--rtmr1", String(repeating: "22", count: 48)])
        let collateral = directory.appendingPathComponent("collateral.json").path
        let root = directory.appendingPathComponent("root.der").path
        let accepted = try await runKeyrack([
            "attest", "verify", "--quote", quote, "--collateral", collateral, "--trust-anchor", root, "--now", teeNow,
            "--json",
        ])
        #expect(accepted.status == 0, "\(accepted.output)")
        let report = try #require(try jsonObject(accepted)["tdReport"] as? [String: String])
        #expect(report["reportData"] == reportData)
        #expect(report["mrTd"] == String(repeating: "11", count: 48))
        #expect(report["rtmr1"] == String(repeating: "22", count: 48))
        let refused = try await runKeyrack([
            "attest", "verify", "--quote", quote, "--collateral", collateral, "--now", teeNow,
        ])
        #expect(refused.status == 1)
        // Bad option values.
        let badStatus = try await runKeyrack(["tee", "init", "--dir", directory.path, "--tcb-status", "Fine"])
        #expect(badStatus.status == 1)
        #expect(badStatus.standardError.contains("unknown TCB status"))
        let badData = try await runKeyrack(["tee", "quote", "--dir", directory.path, "--report-data", "00"])
        #expect(badData.status == 1)
        #expect(badData.standardError.contains("--report-data must be 64 bytes"))
        #expect(badData.standardOutput.isEmpty)
    }

    @Test("dcap-qvl accepts the software TEE's quotes with its root and agrees on every verdict")
    func dcapQVLCrossCheck() async throws {
        // The collateral of README's --tcb-levels example: two platform levels, module levels, a QE level.
        let levels = temporaryDirectory().appendingPathComponent("levels.json")
        try FileManager.default.createDirectory(
            at: levels.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(
            #"""
            {"tcbLevels": [{"tdx": [5, 0, 4], "status": "UpToDate"},
                           {"tdx": [5, 0, 3], "status": "OutOfDate", "advisories": ["INTEL-SA-01079"]}],
             "tdxModuleIdentities": [{"id": "TDX_01", "levels": [{"isvsvn": 5, "status": "UpToDate"},
                                                                {"isvsvn": 2, "status": "OutOfDate"}]}],
             "qeLevels": [{"isvsvn": 4, "status": "ConfigurationNeeded"}]}
            """#.utf8
        ).write(to: levels)
        let cases: [([String], [String])] = [
            ([], []),
            (["--tcb-status", "OutOfDate"], []),
            (["--tcb-status", "SWHardeningNeeded"], []),
            (["--tcb-status", "ConfigurationAndSWHardeningNeeded"], []),
            (["--tcb-status", "Revoked"], []),
            (["--revoked-pck"], []),
            (["--expired-collateral"], []),
            ([], ["--debug"]),
            // The quote shapes and collateral options of `tee init` and `tee quote`, through the binary.
            ([], ["--version", "5"]),
            ([], ["--version", "5", "--body", "td15"]),
            ([], ["--version", "5", "--body", "td15", "--mr-service-td", String(repeating: "ab", count: 48)]),
            ([], ["--version", "5", "--body", "td15", "--tee-tcb-svn2", "02010300000000000000000000000000"]),
            ([], ["--td-attributes", "0000000000000000"]),
            ([], ["--td-attributes", "0000003000000000"]),
            ([], ["--tee-tcb-svn", "04010300000000000000000000000000"]),
            ([], ["--seam-attributes", "0100000000000000"]),
            ([], ["--trailing-bytes", "0000"]),
            (["--tcb-levels", levels.path], []),
            (["--tcb-levels", levels.path], ["--tee-tcb-svn", "02010300000000000000000000000000"]),
            (["--valid-for=-60"], []),
            (["--crl-valid-for=-60"], []),
            (["--issued-ago", "7200"], []),
        ]
        // What the TDX rules say of the cases whose verdict does not depend on a reading of the rules.
        let expected: [String: Bool] = [
            "": true, "--revoked-pck": false, "--expired-collateral": false, "--debug": false,
            "--version 5": true, "--version 5 --body td15": true,
            "--version 5 --body td15 --mr-service-td \(String(repeating: "ab", count: 48))": false,
            "--td-attributes 0000000000000000": false, "--td-attributes 0000003000000000": false,
            "--valid-for=-60": false, "--crl-valid-for=-60": false,
            "--issued-ago 7200": true,
        ]
        for (initOptions, quoteOptions) in cases {
            let directory = temporaryDirectory()
            let quote = try await softwareTEEQuote(directory, init: initOptions, quote: quoteOptions)
            let collateral = directory.appendingPathComponent("collateral.json").path
            let root = directory.appendingPathComponent("root.der").path
            let ours = try jsonObject(
                try await runKeyrack([
                    "attest", "verify", "--quote", quote, "--collateral", collateral, "--trust-anchor", root, "--now",
                    teeNow, "--json",
                ]))
            let theirs = try await runDCAPQVL(quote: quote, collateral: collateral, root: root, now: teeNow)
            let label = (initOptions + quoteOptions).joined(separator: " ")
            #expect(ours["ok"] as? Bool == theirs["ok"] as? Bool, "\(label): ours \(ours), dcap-qvl \(theirs)")
            if let verdict = expected[label] { #expect(ours["ok"] as? Bool == verdict, "\(label): \(ours)") }
            if theirs["ok"] as? Bool == true {
                #expect(ours["status"] as? String == theirs["status"] as? String, "\(label)")
                #expect(ours["advisoryIds"] as? [String] == theirs["advisoryIds"] as? [String], "\(label)")
            }
        }
    }

    @Test("bench verify --json prints cold_us and warm_us")
    func benchVerify() async throws {
        let result = try await runKeyrack([
            "bench", "verify", "--quote", tdx("tdx_v4_uptodate.quote"), "--collateral",
            tdx("tdx_v4_uptodate.collateral.json"), "--now", "1750332747", "--samples", "3", "--json",
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let object = try jsonObject(result)
        #expect((object["cold_us"] as? Int ?? 0) > 0)
        #expect((object["warm_us"] as? Int ?? 0) > 0)
        #expect(object["dcap_qvl_us"] == nil)
        // Beside dcap-qvl 0.7.0 on the same inputs: its time and the two ratios.
        let compared = try await runKeyrack([
            "bench", "verify", "--quote", tdx("tdx_v4_uptodate.quote"), "--collateral",
            tdx("tdx_v4_uptodate.collateral.json"), "--now", "1750332747", "--samples", "3", "--against-dcap-qvl",
            "--json",
        ])
        #expect(compared.status == 0, "\(compared.standardError)")
        let both = try jsonObject(compared)
        let reference = try #require(both["dcap_qvl_us"] as? Int)
        let cold = try #require(both["cold_us"] as? Int)
        #expect(reference > 0)
        let ratio = try #require(both["cold_ratio"] as? Double)
        // The ratio is printed to three decimals from unrounded times; cold_us and dcap_qvl_us are
        // each rounded to a microsecond, and the reference's rounding is scaled by the ratio.
        #expect(abs(ratio - Double(cold) / Double(reference)) < 0.001 + (ratio + 1) / Double(reference))
        #expect((both["warm_ratio"] as? Double ?? 0) > 0)
        let failing = try await runKeyrack([
            "bench", "verify", "--quote", tdx("tdx_v4_uptodate.quote"), "--collateral",
            tdx("tdx_v4_uptodate.collateral.json"), "--now", "1", "--samples", "3",
        ])
        #expect(failing.status == 1)
        #expect(failing.standardError.contains("does not verify"))
    }
}

/// Runs `scripts/dcap_qvl_verify.py`; fails with the install step if dcap-qvl is missing.
private func runDCAPQVL(quote: String, collateral: String, root: String, now: String) async throws -> [String: Any] {
    // On a thread of its own, not on the cooperative pool every async test shares.
    let result = try await offCooperativePool {
        try runProcessBlocking(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "python3", repository.appendingPathComponent("scripts/dcap_qvl_verify.py").path, quote, collateral,
                root, now,
            ]
        )
    }
    let data = result.output
    guard result.status == 0 else {
        let errorText = String(decoding: result.errors, as: UTF8.self)
        throw CLITestError(
            "the dcap-qvl cross-check could not run (\(errorText.trimmingCharacters(in: .whitespacesAndNewlines))); install Python 3, then `pip install dcap-qvl==0.7.0`"
        )
    }
    let object = try JSONSerialization.jsonObject(with: data)
    return try #require(object as? [String: Any])
}
