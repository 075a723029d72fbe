import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import KeyRelease

@Suite("dstack key provider against a stand-in on a real Unix socket")
struct DstackKeyProviderTests {
    let peer = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"

    @Test("the key is the first 32 bytes of what the agent derives for namespace/peerId")
    func derives() async throws {
        let agent = try DstackStandIn()
        defer { agent.stop() }
        let provider = DstackKeyProvider(socketPath: agent.socketPath)
        try provider.checkReady()
        let key = try await provider.deriveKey(namespace: "keyrack/storage", peerId: peer)
        let expected = DstackStandIn.expectedKey(root: agent.root, path: "keyrack/storage/\(peer)")
        #expect(key.unsafeCopiedBytes == Array(expected.prefix(32)))
        // Deterministic, and different per peer.
        #expect(try await provider.deriveKey(namespace: "keyrack/storage", peerId: peer) == key)
        #expect(try await provider.deriveKey(namespace: "keyrack/storage", peerId: peer + "2") != key)
    }

    @Test("the socket gone, an HTTP error, or a body that is not GetKey JSON: a clear error")
    func failures() async throws {
        let failing = try DstackStandIn(behaviour: .failing)
        defer { failing.stop() }
        let http = await #expect(throws: KeyProviderError.self) {
            try await DstackKeyProvider(socketPath: failing.socketPath).deriveKey(namespace: "n", peerId: peer)
        }
        #expect(http?.code == .dstackAnswer)
        #expect(http?.reason == "dstack answered HTTP 500")
        let garbage = try DstackStandIn(behaviour: .garbage)
        defer { garbage.stop() }
        let malformed = await #expect(throws: KeyProviderError.self) {
            try await DstackKeyProvider(socketPath: garbage.socketPath).deriveKey(namespace: "n", peerId: peer)
        }
        #expect(malformed?.code == .dstackAnswer)
        #expect(malformed?.reason == "dstack's answer is not the GetKey JSON")
        let gone = try DstackStandIn()
        let path = gone.socketPath
        gone.stop()
        let provider = DstackKeyProvider(socketPath: path)
        #expect((#expect(throws: KeyProviderError.self) { try provider.checkReady() })?.code == .dstackUnreachable)
        let unreachable = await #expect(throws: KeyProviderError.self) {
            try await provider.deriveKey(namespace: "n", peerId: peer)
        }
        #expect(unreachable?.code == .dstackUnreachable)
    }

    @Test("the stand-in is faithful: the official Python client (dstack-sdk) gets the same key from it")
    func officialClient() async throws {
        let agent = try DstackStandIn()
        defer { agent.stop() }
        let script = """
            import sys
            try:
                from dstack_sdk import DstackClient
            except ImportError:
                print("dstack-sdk is not installed: run `pip install dstack-sdk` (CI does this in .ci/run)", file=sys.stderr)
                sys.exit(3)
            response = DstackClient(sys.argv[1]).get_key(sys.argv[2], "storage")
            print(response.key)
            print(len(response.decode_signature_chain()))
            """
        let result = try await runToCompletion(
            URL(fileURLWithPath: findExecutable("python3") ?? "/usr/bin/python3"),
            ["-c", script, agent.socketPath, "keyrack/storage/\(peer)"]
        )
        try #require(result.status == 0, "python dstack-sdk failed: \(result.errors)")
        let stdout = result.output
        let lines = stdout.split(separator: "\n")
        let expected = DstackStandIn.expectedKey(root: agent.root, path: "keyrack/storage/\(peer)")
        #expect(lines.first.map(String.init) == expected.hexString)
        #expect(lines.dropFirst().first == "2")
    }
}
