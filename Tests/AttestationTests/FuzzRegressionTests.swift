import Attestation
import Foundation
import Testing

/// Every input in `Fuzz/Regressions/` (crashes the fuzzer once found) and the
/// fuzzer's seeds go through the parser and the verifier without trapping.
@Suite("fuzz regressions")
struct FuzzRegressionTests {
    static let folder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Regressions")

    @Test("regression inputs and seeds are refused or verified, never a crash")
    func inputs() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter { $0 != "README.md" }
        var inputs = try names.map { [UInt8](try Data(contentsOf: Self.folder.appendingPathComponent($0))) }
        inputs += try ["tdx_v4_uptodate.quote", "tdx_v5_td15.quote", "sgx_v3.quote"].map { try TestData.bytes($0) }
        let collateral = try TestData.collateral(TestData.v4Collateral)
        var verified = 0
        for input in inputs {
            if (try? QuoteVerifier().verify(quote: input, collateral: collateral, now: TestData.v4Now)) != nil {
                verified += 1
            }
        }
        // Only the untouched v4 quote verifies with the v4 collateral.
        #expect(verified == 1)
    }
}
