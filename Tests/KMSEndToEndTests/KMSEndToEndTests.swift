import Attestation
import Crypto
import Foundation
import KMSClient
import KeyRelease
import KeyrackCore
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
        // Stopped gracefully, each KMS has written its whole log (audit
        // lines are written in the background and flushed at exit).
        #expect(first.process.stop() == 0)
        #expect(second.process.stop() == 0)
        // The audit log names the peer and the outcome and never the key.
        let log = first.process.log + second.process.log
        #expect(log.contains("outcome=Released"))
        #expect(log.contains(identity.peerId.string))
        #expect(!log.contains(fromFirst.withUnsafeBytes { Data($0).base64EncodedString() }))
    }

    @Test("TLS_CERT and TLS_KEY: the KMS serves HTTPS (checked with curl), and stops cleanly on SIGTERM")
    func tls() async throws {
        let platform = try Platform()
        let curl = try #require(findExecutable("curl"), "curl is needed: run `apt-get install -y curl`")
        let (certificate, key) = try await makeServerCertificate(in: platform.directory, name: "kms")
        let process = try KeyrackProcess(
            ["kms", "serve"],
            environment: platform.environment(port: 0, extra: ["TLS_CERT": certificate, "TLS_KEY": key])
        )
        // Port 0: the KMS picks a free port and logs it.
        var port = 0
        for _ in 0..<500 where port == 0 {
            if let range = process.log.range(of: "url=https://127.0.0.1:") {
                port = Int(process.log[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        try #require(port != 0, "the KMS did not log its port:\n\(process.log)")
        var answered = ""
        for _ in 0..<200 {
            let probe = try await runToCompletion(
                URL(fileURLWithPath: curl),
                ["-s", "--cacert", certificate, "https://127.0.0.1:\(port)/healthz"]
            )
            if probe.status == 0 {
                answered = probe.output
                break
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(answered.contains("ok"), "\(process.log)")
        // Plain HTTP on the TLS port is not served.
        let plain = try await runToCompletion(
            URL(fileURLWithPath: curl), ["-s", "-m", "3", "http://127.0.0.1:\(port)/healthz"])
        #expect(!plain.output.contains("\"ok\""))
        #expect(process.stop() == 0)
    }

    @Test(
        "HTTPS end to end: get-key --ca-cert over TLS (proven, wrapped); the system roots or another CA refuse the KMS; a silent TLS client is cut off"
    )
    func https() async throws {
        let platform = try Platform()
        let (certificate, key) = try await makeServerCertificate(in: platform.directory, name: "kms")
        let (otherCA, _) = try await makeServerCertificate(in: platform.directory, name: "other")
        let kms = try await KMS(
            platform.environment(
                port: 0, extra: ["TLS_CERT": certificate, "TLS_KEY": key, "IDLE_TIMEOUT_SECS": "2"]),
            scheme: "https")
        let identityFile = platform.directory.appendingPathComponent("node.id").path
        let created = await runKeyrackToEnd(["peer-id", "new", "--out", identityFile])
        #expect(created.status == 0)
        let peer = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let url = "https://127.0.0.1:\(kms.port)"
        let tee = "software:\(platform.teeDirectory.path)"
        let keyFile = platform.directory.appendingPathComponent("storage.key").path
        let fetched = await runKeyrackToEnd([
            "kms", "get-key", "--url", url, "--ca-cert", certificate, "--identity", identityFile, "--tee", tee,
            "--out", keyFile,
        ])
        #expect(fetched.status == 0, "\(fetched.output)")
        let root = try LocalKeyProvider(rootFile: platform.rootFile.path)
        #expect(
            root.deriveKey(namespace: "keyrack/storage", peerId: peer).unsafeCopiedBytes
                == Array(try Data(contentsOf: URL(fileURLWithPath: keyFile))))
        // The release went the hardened way: a proven challenge, the key wrapped (the server's own counts).
        let metrics = try await runToCompletion(
            URL(fileURLWithPath: try #require(findExecutable("curl"))),
            ["-s", "--cacert", certificate, "\(url)/metrics"])
        #expect(metricValue(metrics.output, "keyrack_kms_challenges_proven_total") == 1, "\(metrics.output)")
        #expect(metricValue(metrics.output, "keyrack_kms_keys_wrapped_total") == 1)

        for (caFlags, name) in [([], "the system's roots"), (["--ca-cert", otherCA], "another CA")] {
            let refused = await runKeyrackToEnd(
                ["kms", "get-key", "--url", url, "--identity", identityFile, "--tee", tee] + caFlags)
            #expect(refused.status == 1, "trusting \(name): \(refused.output)")
            #expect(
                refused.output.contains("cannot reach the KMS at https://127.0.0.1:\(kms.port)"), "\(refused.output)")
        }
        // The refused clients never reached the KMS's API: one challenge, one release in all.
        let after = try await runToCompletion(
            URL(fileURLWithPath: try #require(findExecutable("curl"))),
            ["-s", "--cacert", certificate, "\(url)/metrics"])
        #expect(metricValue(after.output, "keyrack_kms_challenges_total{outcome=\"Issued\"}") == 1)
        #expect(metricValue(after.output, "keyrack_kms_key_requests_total{outcome=\"Released\"}") == 1)

        // A client that connects and never starts its handshake is closed by the deadline.
        let silent = try RawConnection(port: kms.port)
        #expect(silent.closedByServer(within: 5_000))
        #expect(kms.process.stop() == 0)
    }

    @Test("plain http:// is refused for every host that is not loopback, before any connection")
    func plainHTTPRefused() throws {
        for url in ["http://10.0.0.5:8080", "http://kms.example:80", "http://[2001:db8::1]:8080", "http://128.0.0.1"] {
            #expect {
                _ = try KeyReleaseClient.transport(url: url, caCertificateFile: nil)
            } throws: { error in
                (error as? KeyReleaseClientError)?.message.hasPrefix("plain http:// is refused for ") == true
            }
        }
        for url in ["http://127.0.0.1:8080", "http://127.9.9.9", "http://localhost:1", "http://[::1]:8080"] {
            guard case .connection = try KeyReleaseClient.transport(url: url, caCertificateFile: nil) else {
                Issue.record("\(url) was not accepted as loopback")
                continue
            }
        }
        for url in ["ftp://127.0.0.1", "https://", "https://h/path", "https://user:pw@h", "127.0.0.1:8080"] {
            #expect(throws: KeyReleaseClientError.self, "\(url)") {
                _ = try KeyReleaseClient.transport(url: url, caCertificateFile: nil)
            }
        }
        #expect(throws: KeyReleaseClientError.self) {
            _ = try KeyReleaseClient.transport(url: "https://h", caCertificateFile: "/no/such/ca.pem")
        }
    }

    @Test("a KMS listening beyond loopback without TLS warns at start")
    func plainBeyondLoopbackWarns() async throws {
        let platform = try Platform()
        // Bound on every interface; no traffic is sent to any of them.
        let process = try KeyrackProcess(
            ["kms", "serve"], environment: platform.environment(port: 0, extra: ["LISTEN_ADDR": "0.0.0.0:0"]))
        for _ in 0..<250 where !process.log.contains("listening") { try await Task.sleep(for: .milliseconds(20)) }
        #expect(process.log.contains("serving plain HTTP beyond loopback"), "\(process.log)")
        #expect(process.stop() == 0)
    }

    @Test("bad settings stop start-up with a message naming the variable")
    func badSettings() async throws {
        let result = await runKeyrackToEnd(["kms", "serve"], environment: ["CHALLENGE_TTL_SECS": "soon"])
        #expect(result.status == 2)
        #expect(result.output.contains("CHALLENGE_TTL_SECS"))
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("loose-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(
            FileManager.default.createFile(
                atPath: root, contents: Data(count: 32), attributes: [.posixPermissions: 0o644]))
        let loose = await runKeyrackToEnd(
            ["kms", "serve"], environment: ["KEY_ROOT_FILE": root, "LISTEN_ADDR": "127.0.0.1:0"])
        #expect(loose.status == 2)
        #expect(loose.output.contains("chmod 600"))
    }

    @Test("kms init-root makes a 0600 root and never overwrites it; serve with a missing root refuses to start")
    func initRoot() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("init-root-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let root = directory.appendingPathComponent("kms-root.key").path
        let missing = await runKeyrackToEnd(
            ["kms", "serve"], environment: ["KEY_ROOT_FILE": root, "LISTEN_ADDR": "127.0.0.1:0"])
        #expect(missing.status == 2)
        #expect(missing.output.contains("KEY_ROOT_FILE \(root) does not exist"))
        #expect(!FileManager.default.fileExists(atPath: root))

        let created = await runKeyrackToEnd(["kms", "init-root", "--out", root])
        #expect(created.status == 0, "\(created.output)")
        let attributes = try FileManager.default.attributesOfItem(atPath: root)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect((attributes[.size] as? Int) == 32)
        let first = try Data(contentsOf: URL(fileURLWithPath: root))
        let again = await runKeyrackToEnd(["kms", "init-root", "--out", root])
        #expect(again.status == 1)
        #expect(again.output.contains("exists already; a key root is never overwritten"), "\(again.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: root)) == first)
        // The root's bytes are never printed.
        #expect(!created.output.contains(first.base64EncodedString()))
        #expect(!created.output.contains(Array(first).hexString))
    }

    @Test("the CLI: peer-id new, then kms get-key --tee software:DIR --out FILE")
    func cli() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform)
        let identityFile = platform.directory.appendingPathComponent("node.id").path
        let keyFile = platform.directory.appendingPathComponent("storage.key").path
        let created = await runKeyrackToEnd(["peer-id", "new", "--out", identityFile])
        #expect(created.status == 0)
        let fetched = await runKeyrackToEnd([
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

        let refused = await runKeyrackToEnd([
            "kms", "get-key", "--url", "http://127.0.0.1:\(kms.port)", "--identity", identityFile, "--tee", "nope",
        ])
        #expect(refused.status == 1)
        #expect(refused.output.contains("--tee must be"))
    }
}

/// A self-signed P-256 certificate for 127.0.0.1 and its key, made with openssl.
func makeServerCertificate(in directory: URL, name: String) async throws -> (certificate: String, key: String) {
    let openssl = try #require(findExecutable("openssl"), "openssl is needed: run `apt-get install -y openssl`")
    let certificate = directory.appendingPathComponent("\(name).crt").path
    let key = directory.appendingPathComponent("\(name).key").path
    let made = try await runToCompletion(
        URL(fileURLWithPath: openssl),
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", certificate,
        ]
    )
    try #require(made.status == 0, "\(made.errors)")
    return (certificate, key)
}

/// Runs keyrack to completion; output is stdout and stderr together.
func runKeyrackToEnd(_ arguments: [String], environment: [String: String] = [:]) async -> (
    status: Int32, output: String
) {
    do {
        let result = try await runToCompletion(try keyrackExecutable(), arguments, environment: environment)
        return (result.status, result.output + result.errors)
    } catch {
        return (-1, "\(error)")
    }
}
