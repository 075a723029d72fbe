import Foundation
import Testing

@Suite("keyrack sim --start lrtq, through the real binary")
struct SimLrtqCLITests {
    @Test("an LRTQ start upgrades, stays live and reads the LRTQ secret as epoch 1 everywhere")
    func lrtqStart() async throws {
        let result = try await runKeyrack(["sim", "--start", "lrtq", "--nodes", "5", "--seed", "3", "--events", "3000"])
        #expect(result.status == 0, "\(result.standardError)")
        let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any] ?? [:]
        #expect(object["start"] as? String == "lrtq")
        #expect(object["liveness"] as? Bool == true)
        #expect((object["violations"] as? [Any])?.isEmpty == true)
        #expect(object["lrtq_secret_readable_as_epoch_1"] as? Bool == true)
        #expect((object["warnings"] as? Int ?? 0) > 0)
    }

    @Test("--start takes tq or lrtq only")
    func badStart() async throws {
        let result = try await runKeyrack(["sim", "--start", "legacy", "--events", "10"])
        #expect(result.status != 0)
        #expect("\(result.standardError)".contains("--start"))
    }
}
