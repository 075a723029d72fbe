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
        "malformed policies are refused with their code",
        arguments: [
            (policyJSON(extra: ",\"rtmr4\":[]"), PolicyErrorCode.unknownField),
            (policyJSON(mrtd: ["abc"]), .field),
            (policyJSON(mrtd: [String(repeating: "1", count: 94)]), .field),
            (policyJSON(tcbStatus: ["Revoked"]), .field),
            (policyJSON(tcbStatus: ["Fine"]), .field),
            (Data("[1]".utf8), .json),
            (Data("{".utf8), .json),
            (Data("{\"mrtd\":[]}".utf8), .field),
        ]
    )
    func malformed(json: Data, code: PolicyErrorCode) {
        let error = #expect(throws: PolicyError.self) { try AttestationPolicy(json: json) }
        #expect(error?.code == code)
    }

    @Test("the holder keeps the last good policy when a reload fails, and reloads on change")
    func holder() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let missing = PolicyHolder(path: path)
        #expect(missing.policy == nil)
        #expect(missing.lastError?.contains("cannot read") == true)
        #expect(failureCode(missing.reload()) == .unreadable)

        try policyJSON().write(to: URL(fileURLWithPath: path))
        let holder = PolicyHolder(path: path)
        #expect(holder.policy != nil)
        #expect(holder.reloadIfChanged() == nil)

        try Data("{broken".utf8).write(to: URL(fileURLWithPath: path))
        guard case .failure(let error)? = holder.reloadIfChanged() else {
            Issue.record("a broken file was accepted or not noticed")
            return
        }
        #expect(error.code == .json)
        #expect(holder.policy?.violation(for: matchingState()) == nil)
        #expect(holder.lastError == error.reason)

        try policyJSON(tcbStatus: ["OutOfDate"]).write(to: URL(fileURLWithPath: path))
        guard case .success = holder.reload() else {
            Issue.record("a good file was refused")
            return
        }
        #expect(holder.policy?.violation(for: matchingState()) == "tcbStatus")
        #expect(holder.lastError == nil)

        #expect(PolicyHolder(path: nil).lastError == "no POLICY_FILE configured")
        #expect(failureCode(PolicyHolder(path: nil).reload()) == .notConfigured)
    }

    /// The code of a failed reload, nil for a success.
    private func failureCode(_ result: Result<Void, PolicyError>) -> PolicyErrorCode? {
        guard case .failure(let error) = result else { return nil }
        return error.code
    }
}
