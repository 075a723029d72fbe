import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import KeyRelease

func policyJSON(
    mrtd: [String] = [String(repeating: "11", count: 48)],
    rtmr: [[String]] = (0..<4).map { [String(repeating: String(format: "%02x", 0x20 + $0), count: 48)] },
    tcbStatus: [String] = ["UpToDate"],
    extra: String = ""
) -> Data {
    func list(_ values: [String]) -> String { "[" + values.map { "\"\($0)\"" }.joined(separator: ",") + "]" }
    var text = "{\"mrtd\":\(list(mrtd))"
    for (index, values) in rtmr.enumerated() { text += ",\"rtmr\(index)\":\(list(values))" }
    text += ",\"tcbStatus\":\(list(tcbStatus))\(extra)}"
    return Data(text.utf8)
}

func matchingState() -> MeasuredState {
    MeasuredState(
        mrtd: [UInt8](repeating: 0x11, count: 48),
        rtmrs: (0..<4).map { [UInt8](repeating: UInt8(0x20 + $0), count: 48) },
        tcbStatus: "UpToDate"
    )
}

@Suite("Attestation policy")
struct PolicyTests {
    @Test("a quote that matches every allowlist passes")
    func allows() throws {
        let policy = try AttestationPolicy(json: policyJSON())
        #expect(policy.violation(for: matchingState()) == nil)
    }

    @Test(
        "each field that misses its allowlist is named",
        arguments: ["MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "tcbStatus"])
    func names(field: String) throws {
        let policy = try AttestationPolicy(json: policyJSON())
        var state = matchingState()
        switch field {
        case "MRTD": state.mrtd[0] ^= 1
        case "tcbStatus": state.tcbStatus = "OutOfDate"
        default: state.rtmrs[Int(field.dropFirst(4))!][47] ^= 1
        }
        #expect(policy.violation(for: state) == field)
    }

    @Test("several allowed values, and an empty list that allows nothing")
    func lists() throws {
        let other = String(repeating: "ab", count: 48)
        let policy = try AttestationPolicy(
            json: policyJSON(
                mrtd: [other, String(repeating: "11", count: 48)], tcbStatus: ["UpToDate", "SWHardeningNeeded"])
        )
        var state = matchingState()
        state.tcbStatus = "SWHardeningNeeded"
        #expect(policy.violation(for: state) == nil)
        let closed = try AttestationPolicy(json: policyJSON(rtmr: [[], [], [], []]))
        #expect(closed.violation(for: matchingState()) == "RTMR0")
    }

    @Test(
        "malformed policies are refused with the reason",
        arguments: [
            (policyJSON(extra: ",\"rtmr4\":[]"), "unknown policy field 'rtmr4'"),
            (policyJSON(mrtd: ["abc"]), "'mrtd' entries must be 96 hex"),
            (policyJSON(mrtd: [String(repeating: "1", count: 94)]), "'mrtd' entries must be 96 hex"),
            (policyJSON(tcbStatus: ["Revoked"]), "Revoked can never be allowed"),
            (policyJSON(tcbStatus: ["Fine"]), "not an acceptable TCB status"),
            (Data("[1]".utf8), "must be a JSON object"),
            (Data("{".utf8), "not valid JSON"),
            (Data("{\"mrtd\":[]}".utf8), "'rtmr0' must be a list"),
        ]
    )
    func malformed(json: Data, reason: String) {
        #expect {
            try AttestationPolicy(json: json)
        } throws: { error in
            (error as? PolicyError)?.reason.contains(reason) == true
        }
    }

    @Test("the holder keeps the last good policy when a reload fails, and reloads on change")
    func holder() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let missing = PolicyHolder(path: path)
        #expect(missing.policy == nil)
        #expect(missing.lastError?.contains("cannot read") == true)

        try policyJSON().write(to: URL(fileURLWithPath: path))
        let holder = PolicyHolder(path: path)
        #expect(holder.policy != nil)
        #expect(holder.reloadIfChanged() == nil)

        try Data("{broken".utf8).write(to: URL(fileURLWithPath: path))
        guard case .failure = holder.reloadIfChanged() else {
            Issue.record("a broken file was accepted or not noticed")
            return
        }
        #expect(holder.policy?.violation(for: matchingState()) == nil)
        #expect(holder.lastError?.contains("not valid JSON") == true)

        try policyJSON(tcbStatus: ["OutOfDate"]).write(to: URL(fileURLWithPath: path))
        guard case .success = holder.reload() else {
            Issue.record("a good file was refused")
            return
        }
        #expect(holder.policy?.violation(for: matchingState()) == "tcbStatus")
        #expect(holder.lastError == nil)

        #expect(PolicyHolder(path: nil).lastError == "no POLICY_FILE configured")
    }
}
