import Attestation
import Foundation
import KMSClient
import KeyRelease
import KeyReleaseServer
import KeyrackCore
import KeyrackTestSupport
import RedisClient
import SecretSharing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("KMS operations: policy, stores, providers, races", .serialized)
struct KMSOperationsTests {
    @Test("a TCB status outside the policy: 403 PolicyViolation on tcbStatus; allowed after a SIGHUP reload")
    func tcbStatus() async throws {
        let platform = try Platform(tcbStatus: .outOfDate)
        let kms = try await KMS.start(platform)
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let refused = try await kms.post(
            "/get-key", try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body)
        #expect(refused.status == 403)
        #expect(refused.error?.field == "tcbStatus")

        try platform.writePolicy(tcbStatus: ["UpToDate", "OutOfDate"])
        kms.process.signal(SIGHUP)
        try await eventually {
            let challenge = try await kms.challenge(for: identity)
            let request = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee)
            return try await kms.post("/get-key", request.body).status == 200
        }
        #expect(kms.process.log.contains("policy reloaded"))
    }

    @Test("COLLATERAL_DIR is read again on SIGHUP, also when no file's name, size or time changed")
    func collateralOnSIGHUP() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform)
        let identity = PeerIdentity.generate()
        func release() async throws -> HTTPConnection.Response {
            let challenge = try await kms.challenge(for: identity)
            let request = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee)
            return try await kms.post("/get-key", request.body)
        }
        #expect(try await release().status == 200)
        // The same document with one hex digit of the TCB info signature changed (same size), and its
        // times put back: the once-a-second change check cannot see it; only SIGHUP can.
        let file = platform.teeDirectory.appendingPathComponent("collateral.json")
        var status = stat()
        try #require(stat(file.path, &status) == 0)
        var text = try String(contentsOf: file, encoding: .utf8)
        let signature = platform.tee.collateral.tcbInfoSignature.hexString
        let range = try #require(text.range(of: signature))
        text.replaceSubrange(range, with: (signature.first == "0" ? "1" : "0") + signature.dropFirst())
        // Written beside the directory with the old times, then renamed over the file: the once-a-second
        // check never sees a new time, not even for the moment between a write and a utimensat.
        let staged = file.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("collateral.json.staged")
        try Data(text.utf8).write(to: staged)
        var times = [status.st_atim, status.st_mtim]
        try #require(utimensat(AT_FDCWD, staged.path, &times, 0) == 0)
        try #require(rename(staged.path, file.path) == 0)
        try await Task.sleep(for: .milliseconds(2_500))
        #expect(try await release().status == 200, "the change check saw a file whose name, size and time are the same")

        kms.process.signal(SIGHUP)
        try await eventually { try await release().status == 401 }
        let refused = try await release()
        #expect(refused.error?.error == "InvalidQuote")
        #expect(refused.error?.message.contains("signature") == true, "\(refused.text)")
    }

    @Test("no policy: 503 PolicyNotReady without spending the challenge; the policy file appears: keys flow")
    func noPolicy() async throws {
        let platform = try Platform()
        try FileManager.default.removeItem(at: platform.policyFile)
        let kms = try await KMS(
            platform.environment(port: 0, extra: ["POLICY_FILE": platform.policyFile.path]))
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503)
        #expect(ready.text.contains("policy"))
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body
        let refused = try await kms.post("/get-key", request)
        #expect(refused.status == 503)
        #expect(refused.error?.error == "PolicyNotReady")

        try platform.writePolicy()
        // Picked up on the file change; the same challenge still works.
        try await eventually { try await kms.post("/get-key", request).status == 200 }

        // A broken edit keeps the last good policy.
        try Data("{oops".utf8).write(to: platform.policyFile)
        try await eventually { kms.process.log.contains("policy reload failed") }
        let again = try await kms.challenge(for: identity)
        #expect(
            try await kms.post("/get-key", try KeyRequest.valid(again, identity: identity, tee: platform.tee).body)
                .status == 200)
    }

    @Test("no POLICY_FILE at all: the KMS serves (503 PolicyNotReady, /readyz names policy) and stops cleanly")
    func withoutPolicyFile() async throws {
        let platform = try Platform()
        let kms = try await KMS.start(platform, policy: false)
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let refused = try await kms.post(
            "/get-key", try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body)
        #expect(refused.status == 503)
        #expect(refused.error?.error == "PolicyNotReady")
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503)
        #expect(ready.text.contains("\"notReady\":[\"policy\"]"), "\(ready.text)")
        // Still serving a while later (the policy reloader has nothing to watch and must not end the service).
        try await Task.sleep(for: .seconds(2))
        #expect(kms.process.process.isRunning, "\(kms.process.log)")
        #expect(try await kms.send(.get, "/healthz", json: "").status == 200)
        #expect(kms.process.stop() == 0, "\(kms.process.log)")
    }

    @Test("no collateral: 503 PolicyNotReady and /readyz says so")
    func noCollateral() async throws {
        let platform = try Platform()
        let empty = platform.directory.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let kms = try await KMS.start(platform, extra: ["COLLATERAL_DIR": empty.path])
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503)
        #expect(ready.text.contains("collateral"))
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let refused = try await kms.post(
            "/get-key", try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body)
        #expect(refused.error?.error == "PolicyNotReady")
    }

    @Test("Redis down: 503 StoreUnavailable (never a 500, never a key); Redis back: service resumes without restart")
    func redisDown() async throws {
        let redis = try RedisServer()
        let platform = try Platform()
        let kms = try await KMS.start(platform, extra: ["REDIS_URL": redis.url()])
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body
        redis.stop()
        let refusedChallenge = try await kms.post("/challenge", ["peerId": identity.peerId.string])
        #expect(refusedChallenge.status == 503)
        #expect(refusedChallenge.error?.error == "StoreUnavailable")
        let refusedKey = try await kms.post("/get-key", request)
        #expect(refusedKey.status == 503)
        #expect(refusedKey.error?.error == "StoreUnavailable")
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503)
        #expect(ready.text.contains("\"notReady\":[\"store\"]"), "\(ready.text)")
        // Redis's address only in the log (review L7).
        for answer in [refusedChallenge, refusedKey, ready] {
            #expect(!answer.text.contains(":\(redis.port)") && !answer.text.contains("127.0.0.1"), "\(answer.text)")
        }
        try await eventually { kms.process.log.contains("\(redis.port)") }
        try redis.restart()
        let fresh = try await kms.challenge(for: identity)
        #expect(
            try await kms.post("/get-key", try KeyRequest.valid(fresh, identity: identity, tee: platform.tee).body)
                .status == 200)
    }

    @Test("the dstack provider: keys from the agent; agent socket gone: 502 KeyDerivationFailed")
    func dstack() async throws {
        let agent = try DstackStandIn()
        let platform = try Platform()
        let kms = try await KMS.start(
            platform, extra: ["KEY_PROVIDER": "dstack", "DSTACK_SOCKET_PATH": agent.socketPath])
        let identity = PeerIdentity.generate()
        let key = try await KeyReleaseClient(
            endpoint: kms.endpoint, identity: identity, quotes: SoftwareTEEQuoteSource(tee: platform.tee)
        ).fetchKey()
        let expected = DstackStandIn.expectedKey(root: agent.root, path: "keyrack/storage/\(identity.peerId.string)")
        #expect(key.unsafeCopiedBytes == Array(expected.prefix(32)))
        agent.stop()
        let challenge = try await kms.challenge(for: identity)
        let refused = try await kms.post(
            "/get-key", try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body)
        #expect(refused.status == 502)
        #expect(refused.error?.error == "KeyDerivationFailed")
    }

    @Test("a challenge expires after CHALLENGE_TTL_SECS: 400 InvalidChallenge", arguments: [false, true])
    func expiry(useRedis: Bool) async throws {
        let redis = useRedis ? try RedisServer() : nil
        let platform = try Platform()
        var extra = ["CHALLENGE_TTL_SECS": "1"]
        if let redis { extra["REDIS_URL"] = redis.url() }
        let kms = try await KMS.start(platform, extra: extra)
        let identity = PeerIdentity.generate()
        let challenge = try await kms.challenge(for: identity)
        let request = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body
        try await Task.sleep(for: .milliseconds(1300))
        let refused = try await kms.post("/get-key", request)
        #expect(refused.status == 400)
        #expect(refused.error?.error == "InvalidChallenge")
    }

    @Test(
        "one challenge, 1,000 concurrent get-key requests over two replicas sharing Redis (one server, a 3-master cluster): exactly one succeeds",
        arguments: [false, true])
    func race(cluster: Bool) async throws {
        raiseOpenFileLimit()
        let redis = cluster ? nil : try RedisServer()
        let redisCluster = cluster ? try RedisCluster() : nil
        let url = try #require(redis?.url() ?? redisCluster?.url)
        let platform = try Platform()
        let replicas = [
            try await KMS.start(platform, extra: ["REDIS_URL": url]),
            try await KMS.start(platform, extra: ["REDIS_URL": url]),
        ]
        let identity = PeerIdentity.generate()
        let challenge = try await replicas[0].challenge(for: identity)
        let body = try JSONSerialization.data(
            withJSONObject: KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body)
        // Open every connection first, then fire all requests at once.
        var connections: [HTTPConnection] = []
        for index in 0..<1000 { connections.append(try await HTTPConnection.connect(to: replicas[index % 2].endpoint)) }
        defer { for connection in connections { connection.close() } }
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for connection in connections {
                group.addTask { try await connection.request(.POST, "/get-key", body: Array(body)).status }
            }
            return try await group.reduce(into: [Int: Int]()) { $0[$1, default: 0] += 1 }
        }
        #expect(statuses[200] == 1, "\(statuses)")
        #expect(statuses[400] == 999, "\(statuses)")
    }
}

@Suite("KMS on a Redis Cluster and on TLS Redis, real servers", .serialized)
struct KMSRedisDeploymentTests {
    @Test("a cluster master killed: 503 StoreUnavailable for its keys, never a 500 and never a replay; the rest served")
    func masterDown() async throws {
        let cluster = try RedisCluster()
        let platform = try Platform()
        let kms = try await KMS.start(platform, extra: ["REDIS_URL": cluster.url])
        // Challenges for many peers, spread over the masters, issued before the crash.
        var pending: [(PeerIdentity, ChallengeResponse)] = []
        for _ in 0..<24 {
            let identity = PeerIdentity.generate()
            pending.append((identity, try await kms.challenge(for: identity)))
        }
        let victim = cluster.ports[2]
        cluster.kill(victim)
        var statuses: [Int: Int] = [:]
        for (identity, challenge) in pending {
            let body = try KeyRequest.valid(challenge, identity: identity, tee: platform.tee).body
            let first = try await kms.post("/get-key", body)
            statuses[first.status, default: 0] += 1
            if first.status == 503 { #expect(first.error?.error == "StoreUnavailable") }
            let id = try #require(UUID(uuidString: challenge.challengeId))
            let slot = RedisClusterClient.slot(of: Array("keyrack:kms:{all-\(Int(id.uuid.0) % 16)}".utf8))
            // The challenge's master decides: down, 503; up, the release goes through (if its peer's keys are up too).
            if try cluster.owner(ofSlot: slot) == victim {
                #expect(first.status == 503, "a challenge on the dead master: \(first.status) \(first.text)")
            }
            // Never twice.
            let again = try await kms.post("/get-key", body)
            #expect(again.status == 400 || again.status == 503, "\(again.status) \(again.text)")
        }
        #expect(statuses[500] == nil, "\(statuses)")
        #expect((statuses[200] ?? 0) > 0 && (statuses[503] ?? 0) > 0, "\(statuses)")
        #expect(Set(statuses.keys).isSubset(of: [200, 503]), "\(statuses)")
        let ready = try await kms.send(.get, "/readyz", json: "")
        #expect(ready.status == 503)
        #expect(ready.text.contains("\"notReady\":[\"store\"]"), "\(ready.text)")
    }

    @Test("TLS Redis with AUTH (rediss://, REDIS_CA_CERT): keys flow; another CA is 503 StoreUnavailable")
    func tlsRedis() async throws {
        let platform = try Platform()
        let certificates = try TestCertificates(in: platform.directory)
        let other = try TestCertificates(in: platform.directory, name: "other")
        let server = try RedisServer(tls: (certificates.serverCertificate, certificates.serverKey), password: "pw-42")
        let url = "rediss://:pw-42@127.0.0.1:\(server.port)/0"
        let kms = try await KMS.start(
            platform, extra: ["REDIS_URL": url, "REDIS_CA_CERT": certificates.caCertificate])
        let key = try await KeyReleaseClient(
            endpoint: kms.endpoint, identity: .generate(), quotes: SoftwareTEEQuoteSource(tee: platform.tee)
        ).fetchKey()
        #expect(key.count == 32)
        #expect(!kms.process.log.contains("pw-42"), "the Redis password reached the log")
        #expect(kms.process.log.contains("rediss://:<redacted>@127.0.0.1:\(server.port)/0"))

        let untrusting = try await KMS.start(platform, extra: ["REDIS_URL": url, "REDIS_CA_CERT": other.caCertificate])
        let refused = try await untrusting.post("/challenge", ["peerId": PeerIdentity.generate().peerId.string])
        #expect(refused.status == 503)
        #expect(refused.error?.error == "StoreUnavailable")
    }

    @Test("REDIS_CA_CERT without a TLS URL, or unreadable, stops start-up naming it; a cluster URL with a /db too")
    func badRedisSettings() async throws {
        for (environment, expected) in [
            (["REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_CA_CERT": "/etc/hostname"], "REDIS_CA_CERT: needs a TLS"),
            (["REDIS_URL": "rediss://127.0.0.1:1/0", "REDIS_CA_CERT": "/no/such.pem"], "REDIS_CA_CERT: cannot read"),
            (["REDIS_URL": "redis+cluster://127.0.0.1:1,127.0.0.1:2/3"], "REDIS_URL: a Redis Cluster has no database"),
        ] {
            let result = await runKeyrackToEnd(["kms", "serve"], environment: environment)
            #expect(result.status == 2)
            #expect(result.output.contains(expected), "\(result.output)")
        }
    }
}

/// Polls `condition` for up to five seconds.
func eventually(_ condition: () async throws -> Bool) async throws {
    for _ in 0..<100 {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("the condition did not become true within 5 s")
}
