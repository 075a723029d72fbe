import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import KeyRelease

@Suite("Local key provider")
struct LocalKeyProviderTests {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    let peer = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"

    @Test("the key is HKDF-SHA256 as specified (value from Python's cryptography package)")
    func vector() throws {
        let provider = try LocalKeyProvider(root: SecretBytes(Array(0..<32)))
        let key = provider.deriveKey(namespace: "keyrack/storage", peerId: peer)
        #expect(key.unsafeCopiedBytes.hexString == "e9c1ec8a0780dfe6bb5a1560dbcf207c80e9db8ef75e24612b9c7ad9c36fddcf")
        #expect(provider.deriveKey(namespace: "keyrack/storage", peerId: peer + "x") != key)
        #expect(provider.deriveKey(namespace: "other", peerId: peer) != key)
    }

    @Test("createRoot makes a 0600 file of 32 bytes, two providers on it agree, and it is never overwritten")
    func createAndShare() throws {
        let path = directory.appendingPathComponent("root").path
        try LocalKeyProvider.createRoot(at: path)
        let first = try LocalKeyProvider(rootFile: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect((attributes[.size] as? Int) == 32)
        let second = try LocalKeyProvider(rootFile: path)
        #expect(
            first.deriveKey(namespace: "n", peerId: peer) == second.deriveKey(namespace: "n", peerId: peer)
        )
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect {
            try LocalKeyProvider.createRoot(at: path)
        } throws: { error in
            (error as? KeyProviderError)?.code == .keyRootExists
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["root"])
    }

    @Test("a missing root file is never created: start-up stops naming KEY_ROOT_FILE and init-root")
    func missingRoot() throws {
        let path = directory.appendingPathComponent("absent").path
        #expect {
            try LocalKeyProvider(rootFile: path)
        } throws: { error in
            guard let error = error as? KeyProviderError else { return false }
            return error.code == .keyRootMissing && error.reason.hasPrefix("KEY_ROOT_FILE \(path) does not exist")
                && error.reason.contains("keyrack kms init-root --out \(path)")
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a root file readable by others, or of the wrong size, stops start-up with the reason")
    func badFiles() throws {
        let loose = directory.appendingPathComponent("loose").path
        #expect(
            FileManager.default.createFile(
                atPath: loose, contents: Data(count: 32), attributes: [.posixPermissions: 0o644]))
        #expect {
            try LocalKeyProvider(rootFile: loose)
        } throws: { error in
            (error as? KeyProviderError).map { $0.code == .keyRoot && $0.reason.contains("chmod 600") } == true
        }
        let short = directory.appendingPathComponent("short").path
        #expect(
            FileManager.default.createFile(
                atPath: short, contents: Data(count: 31), attributes: [.posixPermissions: 0o600]))
        #expect {
            try LocalKeyProvider(rootFile: short)
        } throws: { error in
            (error as? KeyProviderError).map { $0.code == .keyRoot && $0.reason.contains("exactly 32 bytes") } == true
        }
        #expect(throws: KeyProviderError.self) {
            try LocalKeyProvider(rootFile: directory.appendingPathComponent("no/such/dir/root").path)
        }
        #expect(throws: KeyProviderError.self) { try LocalKeyProvider(root: SecretBytes([1, 2, 3])) }
    }
}
