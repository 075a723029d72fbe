import Foundation
import KeyrackTestSupport
import Testing

@Suite("The live KMS against its OpenAPI document (schemathesis)")
struct SchemathesisTests {
    @Test("no 5xx and no answer that does not match openapi/kms.yaml")
    func conformance() async throws {
        guard let schemathesis = findExecutable("schemathesis") else {
            Issue.record("schemathesis is not installed: run `pip install schemathesis` (CI does this in .ci/run)")
            return
        }
        let platform = try Platform()
        let kms = try await KMS.start(platform)
        let document = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("openapi/kms.yaml")
        // Every check but positive_data_acceptance: a schema-valid peer id or
        // quote is not thereby a valid one, so refusing it is right.
        let result = try await runToCompletion(
            URL(fileURLWithPath: schemathesis),
            [
                "run", document.path, "--url", "http://127.0.0.1:\(kms.port)",
                "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                "--max-examples", "150", "--seed", "20261121", "--workers", "2",
            ],
            environment: ["NO_COLOR": "1"],
            // schemathesis and hypothesis write caches into the working directory.
            directory: platform.directory
        )
        let text = result.output + result.errors
        #expect(result.status == 0, "schemathesis found problems:\n\(text.suffix(6000))")
        #expect(text.contains("passed"))
        #expect(
            !kms.process.log.contains("error keyrack"), "the server logged errors:\n\(kms.process.log.suffix(3000))")
    }
}
