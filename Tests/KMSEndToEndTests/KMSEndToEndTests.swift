import Attestation
import Crypto
import Foundation
import KeyRelease
import KeyrackTestSupport
import RedisClient
import SecretSharing
import Testing

@Suite("KMS end to end: real processes, software TEE quotes", .serialized)
struct KMSEndToEndTests {
    @Test("the happy path, and keys are deterministic across two replicas sharing a root and Redis")
    func happyPath() async throws {
        let redis = try RedisServer()
        let platform = try Platform()
        let shared = ["REDIS_URL": redis.url()]
        let first = try await KMS.start(platform, extra: shared)
        let second = try await KMS.start(platform, extra: shared)
        let identity = PeerIdentity.generate()
        let source = SoftwareTEEQuoteSource(tee: platform.tee)
        let fromFirst = try await KeyReleaseClient(endpoint: first.endpoint, identity: identity, quotes: source)
            .fetchKey()
        let fromSecond = try await KeyReleaseClient(endpoint: second.endpoint, identity: identity, quotes: source)
            .fetchKey()
        #expect(fromFirst.count == 32)
        #expect(fromFirst == fromSecond)
        // The key is the local provider's derivation from the shared root file.
        let root = try LocalKeyProvider(rootFile: platform.directory.appendingPathComponent("root.key").path)
        #expect(root.deriveKey(namespace: "keyrack/storage", peerId: identity.peerId.string) == fromFirst)
        // Another peer gets another key.
        let other = try await KeyReleaseClient(endpoint: first.endpoint, identity: .generate(), quotes: source)
            .fetchKey()
        #expect(other != fromFirst)
        // The audit log names the peer and the outcome and never the key.
        let log = first.process.log + second.process.log
        #expect(log.contains("outcome=Released"))
        #expect(log.contains(identity.peerId.string))
        #expect(!log.contains(fromFirst.withUnsafeBytes { Data($0).base64EncodedString() }))
    }

    @Test("the CLI: peer-id new, then kms get-key --tee software:DIR --out FILE")
    func cli() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform)
        let identityFile = platform.directory.appendingPathComponent("node.id").path
        let keyFile = platform.directory.appendingPathComponent("storage.key").path
        let created = try runKeyrackToEnd(["peer-id", "new", "--out", identityFile])
        #expect(created.status == 0)
        let fetched = try runKeyrackToEnd([
            "kms", "get-key", "--url", "http://127.0.0.1:\(kms.port)", "--identity", identityFile,
            "--tee", "software:\(platform.teeDirectory.path)", "--out", keyFile,
        ])
        #expect(fetched.status == 0, "\(fetched.output)")
        let key = try Data(contentsOf: URL(fileURLWithPath: keyFile))
        #expect(key.count == 32)
        let attributes = try FileManager.default.attributesOfItem(atPath: keyFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let peer = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let root = try LocalKeyProvider(rootFile: platform.directory.appendingPathComponent("root.key").path)
        #expect(root.deriveKey(namespace: "keyrack/storage", peerId: peer).unsafeCopiedBytes == Array(key))

        let refused = try runKeyrackToEnd([
            "kms", "get-key", "--url", "http://127.0.0.1:\(kms.port)", "--identity", identityFile, "--tee", "nope",
        ])
        #expect(refused.status == 1)
        #expect(refused.output.contains("--tee must be"))
    }
}

/// Runs keyrack to completion; output is stdout and stderr together.
func runKeyrackToEnd(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let result = try runToCompletion(try keyrackExecutable(), arguments)
    return (result.status, result.output + result.errors)
}
