import Foundation
import KeyrackTestSupport
import RedisClient
import Synchronization
import Testing

@testable import KeyRelease

/// A clock tests can move.
final class TestClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 += seconds } }
}

func makeChallenge(peer: String = "peer-a", expiresAt: Date) -> Challenge {
    Challenge(id: UUID(), nonce: (0..<32).map { _ in UInt8.random(in: 0...255) }, peerId: peer, expiresAt: expiresAt)
}

/// The behaviour every store must have, run against each kind.
func exerciseStore(_ store: some ChallengeStore, ttl: TimeInterval, now: () -> Date) async throws {
    let before = now()
    let requested = makeChallenge(expiresAt: before + ttl)
    let challenge = try await store.issue(requested, maximumPending: 8)
    let after = now()
    #expect(challenge.id == requested.id && challenge.nonce == requested.nonce && challenge.peerId == requested.peerId)
    // The store fixes the expiry when it runs: between the two readings, plus the TTL.
    #expect(challenge.expiresAt >= before + ttl - 1 && challenge.expiresAt <= after + ttl + 1)
    #expect(try await store.pendingCount() >= 1)
    let consumed = try await store.consume(challenge.id)
    #expect(consumed == challenge)
    // One-time: the second consume finds nothing.
    #expect(try await store.consume(challenge.id) == nil)
    #expect(try await store.consume(UUID()) == nil)
}

func exerciseLimit(_ store: some ChallengeStore, now: () -> Date) async throws {
    let peer = "peer-limit-\(UUID())"
    let started = now()
    var issued: [Challenge] = []
    for index in 0..<3 {
        let challenge = makeChallenge(peer: peer, expiresAt: now() + 60 + Double(index))
        try await store.issue(challenge, maximumPending: 3)
        issued.append(challenge)
    }
    do {
        try await store.issue(makeChallenge(peer: peer, expiresAt: now() + 60), maximumPending: 3)
        Issue.record("the fourth challenge was issued")
    } catch {
        guard case .rateLimited(let retryAfter) = error else { throw error }
        // The oldest expires 60 s after it was issued, which was at most
        // `elapsed` ago.
        let elapsed = now().timeIntervalSince(started)
        #expect(retryAfter > .seconds(59 - elapsed) && retryAfter <= .seconds(61))
    }
    // Another peer is not affected.
    try await store.issue(makeChallenge(peer: peer + "-other", expiresAt: now() + 60), maximumPending: 3)
    // Consuming one frees a place.
    _ = try await store.consume(issued[0].id)
    try await store.issue(makeChallenge(peer: peer, expiresAt: now() + 60), maximumPending: 3)
}

/// The two budgets are separate: anonymous requests cannot spend the proven one, nor the other way round.
func exerciseBudgets(_ store: some ChallengeStore, now: () -> Date) async throws {
    let peer = "peer-budget-\(UUID())"
    let limits = ChallengeLimits(perPeer: 2)
    func make(_ budget: ChallengeBudget) -> Challenge {
        Challenge(
            id: UUID(), nonce: Array(repeating: 7, count: 32), peerId: peer, expiresAt: now() + 60, budget: budget)
    }
    for _ in 0..<2 { try await store.issue(make(.anonymous), limits: limits) }
    await #expect(throws: ChallengeStoreError.self) { try await store.issue(make(.anonymous), limits: limits) }
    let proven = try await store.issue(make(.proven), limits: limits)
    try await store.issue(make(.proven), limits: limits)
    do {
        try await store.issue(make(.proven), limits: limits)
        Issue.record("a third proven challenge was issued")
    } catch {
        guard case .rateLimited = error else { throw error }
    }
    // The budget survives the store: consumed, the challenge says which it was, and frees its own budget.
    let consumed = try await store.consume(proven.id)
    #expect(consumed?.budget == .proven)
    try await store.issue(make(.proven), limits: limits)
    await #expect(throws: ChallengeStoreError.self) { try await store.issue(make(.anonymous), limits: limits) }
}

/// The total bounds every peer together; consuming frees a place.
func exerciseTotal(_ store: some ChallengeStore, now: () -> Date) async throws {
    let limits = ChallengeLimits(perPeer: 8, total: 3)
    var issued: [Challenge] = []
    for index in 0..<3 {
        issued.append(
            try await store.issue(makeChallenge(peer: "peer-total-\(index)", expiresAt: now() + 60), limits: limits))
    }
    do {
        try await store.issue(makeChallenge(peer: "peer-total-x", expiresAt: now() + 60), limits: limits)
        Issue.record("a fourth challenge was issued past the total")
    } catch {
        guard case .full(let retryAfter) = error else { throw error }
        #expect(retryAfter > .seconds(50) && retryAfter <= .seconds(61))
    }
    // The refused peer was not charged: with the total freed it gets its whole budget.
    _ = try await store.consume(issued[0].id)
    try await store.issue(makeChallenge(peer: "peer-total-x", expiresAt: now() + 60), limits: limits)
    #expect(try await store.pendingCount() == 3)
}

@Suite("Memory challenge store")
struct MemoryChallengeStoreTests {
    @Test("the anonymous and proven budgets are separate")
    func budgets() async throws {
        let clock = TestClock()
        try await exerciseBudgets(MemoryChallengeStore(now: { clock.now })) { clock.now }
    }

    @Test("the total limit: full is refused with the oldest's expiry, consuming frees a place")
    func total() async throws {
        let clock = TestClock()
        try await exerciseTotal(MemoryChallengeStore(now: { clock.now })) { clock.now }
    }

    @Test("expired challenges are swept in bounded batches, never all at once")
    func boundedSweep() async throws {
        let clock = TestClock()
        let store = MemoryChallengeStore(now: { clock.now })
        let count = 1_000
        for index in 0..<count {
            try await store.issue(makeChallenge(peer: "peer-\(index)", expiresAt: clock.now + 10), maximumPending: 8)
        }
        #expect(store.pendingCount() == count)
        clock.advance(11)
        // Each operation passes at most sweepBatch entries: the count falls by exactly that per call.
        let batch = MemoryChallengeStore.sweepBatch
        var seen: [Int] = []
        for _ in 0..<(count / batch + 2) { seen.append(store.pendingCount()) }
        let expected = (1...(count / batch + 2)).map { max(0, count - $0 * batch) }
        #expect(seen == expected)
    }

    @Test("issue, consume once, unknown ids")
    func basics() async throws {
        let clock = TestClock()
        try await exerciseStore(MemoryChallengeStore(now: { clock.now }), ttl: 300) { clock.now }
    }

    @Test("the per-peer limit, with Retry-After from the oldest pending challenge")
    func limit() async throws {
        let clock = TestClock()
        try await exerciseLimit(MemoryChallengeStore(now: { clock.now })) { clock.now }
    }

    @Test("an expired challenge is refused and no longer counts against the limit")
    func expiry() async throws {
        let clock = TestClock()
        let store = MemoryChallengeStore(now: { clock.now })
        let challenge = makeChallenge(expiresAt: clock.now + 10)
        try await store.issue(challenge, maximumPending: 1)
        await #expect(throws: ChallengeStoreError.self) {
            try await store.issue(makeChallenge(expiresAt: clock.now + 10), maximumPending: 1)
        }
        clock.advance(10)
        #expect(store.consume(challenge.id) == nil)
        try await store.issue(makeChallenge(expiresAt: clock.now + 10), maximumPending: 1)
        clock.advance(5)
        #expect(store.pendingCount() == 1)
        clock.advance(6)
        #expect(store.pendingCount() == 0)
    }

    @Test("1,000 concurrent consumers of one challenge: exactly one wins")
    func race() async throws {
        // A clock that stands still: the consumers may wait long for the cooperative pool (CPU-bound
        // tests share it), and the challenge must not expire meanwhile.
        let now = Date()
        let store = MemoryChallengeStore(now: { now })
        let challenge = makeChallenge(expiresAt: now + 60)
        try await store.issue(challenge, maximumPending: 8)
        let winners = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 { group.addTask { store.consume(challenge.id) != nil } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(winners == 1)
    }
}

@Suite("Redis challenge store against a real redis-server", .serialized)
struct RedisChallengeStoreTests {
    let server: RedisServer

    init() throws { server = try RedisServer() }

    func store(prefix: String = "t") throws -> RedisChallengeStore {
        RedisChallengeStore(
            client: RedisClient(configuration: try RedisConfiguration(url: server.url())), prefix: prefix)
    }

    @Test("issue, consume once, unknown ids")
    func basics() async throws {
        try await exerciseStore(store(), ttl: 300) { Date() }
    }

    @Test("the anonymous and proven budgets are separate")
    func budgets() async throws {
        try await exerciseBudgets(store()) { Date() }
    }

    @Test("the total limit: full is refused with the oldest's expiry, consuming frees a place")
    func total() async throws {
        try await exerciseTotal(store(prefix: "total-\(UUID())")) { Date() }
    }

    @Test("every key a script touches shares one hash slot (a Redis Cluster refuses the script otherwise)")
    func hashTags() throws {
        let store = try store(prefix: "keyrack:kms")
        let id = UUID()
        #expect(store.challengeKey(id) == "keyrack:kms:{all}:c:\(id.uuidString.lowercased())")
        #expect(store.peerKey("12D3KooWabc", .proven) == "keyrack:kms:p:{12D3KooWabc}:proven")
        #expect(store.allKeys == ["keyrack:kms:{all}"])
        // Sharded (a cluster): each challenge beside its shard's set, by the first byte of its id.
        let sharded = RedisChallengeStore(
            client: RedisClient(configuration: try RedisConfiguration(url: server.url())), prefix: "keyrack:kms",
            totalShards: 16)
        #expect(sharded.allKeys.count == 16)
        for _ in 0..<64 {
            let id = UUID()
            let shard = Int(id.uuid.0) % 16
            #expect(sharded.challengeKey(id) == "keyrack:kms:{all-\(shard)}:c:\(id.uuidString.lowercased())")
            #expect(
                RedisClusterClient.slot(of: Array(sharded.challengeKey(id).utf8))
                    == RedisClusterClient.slot(of: Array(sharded.allKey(shard: shard).utf8)))
        }
    }

    @Test("the per-peer limit holds across two replicas")
    func limit() async throws {
        let replicaA = try store()
        let replicaB = try store()
        let peer = "peer-\(UUID())"
        try await replicaA.issue(makeChallenge(peer: peer, expiresAt: Date() + 60), maximumPending: 2)
        try await replicaB.issue(makeChallenge(peer: peer, expiresAt: Date() + 60), maximumPending: 2)
        await #expect(throws: ChallengeStoreError.self) {
            try await replicaA.issue(makeChallenge(peer: peer, expiresAt: Date() + 60), maximumPending: 2)
        }
        try await exerciseLimit(replicaB) { Date() }
    }

    @Test("racing issues from two replicas never exceed the limit")
    func issueRace() async throws {
        let replicas = [try store(), try store()]
        let peer = "peer-\(UUID())"
        let accepted = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    do {
                        try await replicas[index % 2].issue(
                            makeChallenge(peer: peer, expiresAt: Date() + 60),
                            maximumPending: 8
                        )
                        return true
                    } catch {
                        return false
                    }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(accepted == 8)
    }

    @Test("one challenge, 1,000 concurrent consumes over two replicas: exactly one wins")
    func consumeRace() async throws {
        let replicas = [try store(), try store()]
        let challenge = makeChallenge(expiresAt: Date() + 60)
        try await replicas[0].issue(challenge, maximumPending: 8)
        let winners = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<1000 {
                group.addTask { (try? await replicas[index % 2].consume(challenge.id)) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(winners == 1)
    }

    @Test("a challenge expires after its TTL (short TTL)")
    func expiry() async throws {
        let replica = try store()
        let challenge = makeChallenge(expiresAt: Date() + 0.3)
        try await replica.issue(challenge, maximumPending: 1)
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await replica.consume(challenge.id) == nil)
        // It no longer counts against the limit either.
        try await replica.issue(makeChallenge(expiresAt: Date() + 60), maximumPending: 1)
    }

    @Test("Redis down: unavailable (never accepted); back up: the same store works")
    func outage() async throws {
        let replica = try store()
        let challenge = makeChallenge(expiresAt: Date() + 60)
        try await replica.issue(challenge, maximumPending: 8)
        server.stop()
        await #expect(throws: ChallengeStoreError.self) { try await replica.consume(challenge.id) }
        await #expect(throws: ChallengeStoreError.self) {
            try await replica.issue(makeChallenge(expiresAt: Date() + 60), maximumPending: 8)
        }
        await #expect(throws: ChallengeStoreError.self) { try await replica.checkReady() }
        try server.restart()
        try await replica.checkReady()
        let fresh = try await replica.issue(makeChallenge(expiresAt: Date() + 60), maximumPending: 8)
        #expect(try await replica.consume(fresh.id) == fresh)
    }
}
