import Attestation
import Foundation
import KeyrackCore
import SecretSharing
import Testing

/// The shared test data: `<repo>/../shared/testdata/tdx`.
enum TestData {
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // AttestationTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository
        .deletingLastPathComponent()  // its parent
        .appendingPathComponent("shared/testdata/tdx")

    static func bytes(_ name: String) throws -> [UInt8] {
        let url = directory.appendingPathComponent(name)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TestDataMissing(path: url.path)
        }
        return [UInt8](data)
    }

    static func collateral(_ name: String) throws -> Collateral {
        try Collateral(json: try bytes(name))
    }

    static func expected() throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(try bytes("expected.json")))
        guard let root = object as? [String: Any], let cases = root["cases"] as? [String: Any] else {
            throw TestDataMissing(path: "expected.json: cases")
        }
        return cases
    }

    static let v4Quote = "tdx_v4_uptodate.quote"
    static let v4Collateral = "tdx_v4_uptodate.collateral.json"
    /// Inside the v4 collateral's validity window.
    static let v4Now: Int64 = 1_750_332_747
}

struct TestDataMissing: Error, CustomStringConvertible {
    let path: String
    var description: String { "test data not found at \(path) (shared/ must be checked out beside the repository)" }
}
