import Foundation
import KeyrackTestSupport
import RedisClient
import Testing

@testable import KeyRelease

@Suite("Redis Cluster and TLS Redis: real servers", .serialized)
struct RedisClusterTests {
    @Test("the hash slot of a key agrees with the cluster's own CLUSTER KEYSLOT, hash tags included")
    func slots() throws {
        let cluster = try RedisCluster()
        let keys =
            ["", "123456789", "foo", "{user1000}.following", "a{}b", "x{y}z{w}", "{", "}{", "keyrack:kms:{all-7}"]
            + (0..<40).map { _ in UUID().uuidString }
        for key in keys {
            let expected = try cluster.cli(cluster.ports[0], ["cluster", "keyslot", key])
            #expect("\(RedisClusterClient.slot(of: Array(key.utf8)))" == expected, "\(key)")
        }
        #expect(RedisClusterClient.slot(of: Array("123456789".utf8)) == 12_739)
    }

    @Test("the store's contract on a 3-master cluster: issue, consume once, limits, budgets, total")
    func contract() async throws {
        let cluster = try RedisCluster()
        let client = RedisClusterClient(configuration: try RedisClusterConfiguration(url: cluster.url))
        defer { client.shutdown() }
        let sharded = RedisChallengeStore(client: client, prefix: "c\(UUID())", totalShards: 16)
        try await exerciseStore(sharded, ttl: 300) { Date() }
        try await exerciseLimit(sharded) { Date() }
        try await exerciseBudgets(sharded) { Date() }
        // The total, sharded: each of the 16 shards holds its share (here 1), never more in all.
        let bounded = RedisChallengeStore(client: client, prefix: "t\(UUID())", totalShards: 16)
        var accepted = 0
        var full = 0
        for index in 0..<48 {
            do {
                try await bounded.issue(
                    makeChallenge(peer: "peer-\(index)", expiresAt: Date() + 60),
                    limits: ChallengeLimits(perPeer: 8, total: 16))
                accepted += 1
            } catch {
                guard case .full = error else { throw error }
                full += 1
            }
        }
        #expect(accepted <= 16 && accepted >= 8, "\(accepted) accepted")
        #expect(full == 48 - accepted)
        #expect(try await bounded.pendingCount() == accepted)
        try await client.checkReady()
        // Challenge keys really are spread over the masters.
        let owners = Set(
            try (0..<32).map { _ in
                try cluster.owner(ofSlot: RedisClusterClient.slot(of: Array(sharded.challengeKey(UUID()).utf8)))
            })
        #expect(owners == Set(cluster.ports))
    }

    @Test("MOVED and ASK are followed: a slot migrated under a running client")
    func redirects() async throws {
        let cluster = try RedisCluster()
        let client = RedisClusterClient(configuration: try RedisClusterConfiguration(url: cluster.url))
        defer { client.shutdown() }
        let key = "migrating-key"
        let slot = RedisClusterClient.slot(of: Array(key.utf8))
        _ = try await client.send(["SET", "warm-up", "1"])  // the client learns the slot map
        // Who owns the slot, and another master to move it to.
        let ids = try Dictionary(
            uniqueKeysWithValues: cluster.ports.map { ($0, try cluster.cli($0, ["cluster", "myid"])) })
        let owner = try cluster.owner(ofSlot: slot)
        let target = try #require(cluster.ports.first { $0 != owner })
        // ASK: the owner migrating, the target importing, the key not on the owner.
        #expect(try cluster.cli(target, ["cluster", "setslot", "\(slot)", "importing", ids[owner]!]) == "OK")
        #expect(try cluster.cli(owner, ["cluster", "setslot", "\(slot)", "migrating", ids[target]!]) == "OK")
        #expect(try await client.send(["SET", .string(key), "asked"]).string == "OK")
        // It landed on the importing node, not on the owner.
        #expect(try cluster.cli(owner, ["cluster", "countkeysinslot", "\(slot)"]) == "0")
        #expect(try cluster.cli(target, ["cluster", "countkeysinslot", "\(slot)"]) == "1")
        // MOVED: the slot now belongs to the target everywhere; the client's map still says the owner.
        for port in cluster.ports {
            _ = try cluster.cli(port, ["cluster", "setslot", "\(slot)", "node", ids[target]!])
        }
        #expect(try await client.send(["GET", .string(key)]).string == "asked")
        #expect(try await client.send(["SET", .string(key), "moved"]).string == "OK")
        #expect(try cluster.cli(target, ["get", key]) == "moved")
    }

    @Test("a master killed: commands for its slots are unavailable, the others go on, nothing hangs")
    func masterDown() async throws {
        let cluster = try RedisCluster()
        let client = RedisClusterClient(configuration: try RedisClusterConfiguration(url: cluster.url))
        defer { client.shutdown() }
        let keys = (0..<60).map { "k-\($0)-\(UUID())" }
        for key in keys { _ = try await client.send(["SET", .string(key), "v"]) }
        let victim = cluster.ports[1]
        let onVictim = try Set(
            keys.filter {
                try cluster.cli(
                    victim,
                    [
                        "cluster", "countkeysinslot",
                        cluster.cli(victim, ["cluster", "keyslot", $0]),
                    ]) != "0"
            })
        cluster.kill(victim)
        var served = 0
        var refused = 0
        for key in keys {
            do {
                let value = try await client.send(["GET", .string(key)])
                #expect(value.string == "v")
                #expect(!onVictim.contains(key), "\(key) served although its master is down")
                served += 1
            } catch {
                guard case .unavailable = error else {
                    Issue.record("\(key): \(error)")
                    continue
                }
                refused += 1
            }
        }
        #expect(refused == onVictim.count && refused > 0)
        #expect(served == keys.count - onVictim.count && served > 0)
        await #expect(throws: RedisError.self) { try await client.checkReady() }
    }

    @Test("TLS Redis with AUTH: the store works with the CA; another CA, no TLS or a wrong password do not")
    func tlsRedis() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-tls-redis-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try TestCertificates(in: directory)
        let other = try TestCertificates(in: directory, name: "other")
        let server = try RedisServer(
            tls: (certificates.serverCertificate, certificates.serverKey), password: "s3cret-pw")
        func store(_ url: String, ca: String?) throws -> (RedisClient, RedisChallengeStore) {
            var configuration = try RedisConfiguration(url: url)
            configuration.caCertificateFile = ca
            let client = RedisClient(configuration: configuration)
            return (client, RedisChallengeStore(client: client, prefix: "tls\(UUID())"))
        }
        let (good, goodStore) = try store(
            "rediss://:s3cret-pw@127.0.0.1:\(server.port)/0", ca: certificates.caCertificate)
        defer { good.shutdown() }
        try await exerciseStore(goodStore, ttl: 300) { Date() }
        try await goodStore.checkReady()
        #expect(good.configuration.description == "rediss://:<redacted>@127.0.0.1:\(server.port)/0")
        for (url, ca) in [
            ("rediss://:s3cret-pw@127.0.0.1:\(server.port)/0", other.caCertificate),  // another CA
            ("rediss://:s3cret-pw@127.0.0.1:\(server.port)/0", nil),  // the system's roots
            ("redis://:s3cret-pw@127.0.0.1:\(server.port)/0", nil),  // no TLS
            ("rediss://:wrong@127.0.0.1:\(server.port)/0", certificates.caCertificate),  // wrong password
        ] {
            let (client, refused) = try store(url, ca: ca)
            defer { client.shutdown() }
            await #expect(throws: ChallengeStoreError.self, "\(url) \(ca ?? "system roots")") {
                try await refused.checkReady()
            }
        }
    }
}
