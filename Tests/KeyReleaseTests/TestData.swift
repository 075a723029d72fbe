import Foundation

/// `<repository>/../shared/testdata/<relative>` (the shared directory sits
/// beside the repository, locally and in CI).
func sharedTestData(_ relative: String) throws -> Data {
    let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let url = repository.deletingLastPathComponent().appendingPathComponent("shared/testdata/\(relative)")
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: url.path])
    }
    return try Data(contentsOf: url)
}
