import Foundation
import KeyrackCore
import RedisClient

/// Challenges in Redis, shared by every replica — one server or a Redis
/// Cluster alike.
///
/// Keys carry hash tags so that every script touches one slot, as a Redis
/// Cluster requires:
/// - `<prefix>:c:{<id>}` holds `peerId|nonceHex|expiresAtMs|budget` with a
///   `PX` TTL, so Redis itself forgets expired challenges;
/// - `<prefix>:p:{<peerId>}:<budget>` is a sorted set of the peer's pending
///   ids in that budget, scored by expiry;
/// - `<prefix>:{all}` the same for every challenge (the total limit and
///   metrics); on a cluster it is split into shards `<prefix>:{all-<n>}`,
///   a peer's challenges counting in shard CRC16(peerId) mod n, each
///   holding its share of the total, so that a master that is down stops
///   only the peers and challenges whose keys it holds.
///
/// Issuing is three steps, each atomic on its own slot: the per-peer limit
/// (a script that reserves a place, so racing replicas can never exceed it),
/// the total (a script; over it, the reservation is undone), then `SET … NX`
/// of the challenge itself. Consuming is `GETDEL`, atomic on its slot, so a
/// challenge is handed out at most once; removing it from the two sets
/// afterwards is tidying only (a failure there leaves an entry that expires
/// with its score). The time comes from Redis (`TIME`) so replicas with
/// skewed clocks agree. Expired entries leave the sets in bounded batches.
public final class RedisChallengeStore: ChallengeStore {
    private let client: any RedisCommanding
    private let prefix: String
    private let totalShards: Int

    /// Expired entries removed from the total's set per issue, at most.
    public static let sweepBatch = 256

    /// A store on `client` with keys under `prefix`; the total is kept in
    /// `totalShards` sets (1 on a single server, 16 on a cluster).
    public init(client: any RedisCommanding, prefix: String = "keyrack:kms", totalShards: Int = 1) {
        self.client = client
        self.prefix = prefix
        self.totalShards = max(1, totalShards)
    }

    /// KEYS[1] the peer's set; ARGV: ttl ms, limit, id. Answers {1, expiresMs}
    /// or {0, ms until the oldest expires}.
    static let reservePeerScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local ttl = tonumber(ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
          local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
          return {0, tonumber(oldest[2]) - now}
        end
        local expires = now + ttl
        redis.call('ZADD', KEYS[1], expires, ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ttl)
        return {1, expires}
        """
    )

    /// KEYS[1] the total's set; ARGV: expiresMs, id, total, batch. Answers
    /// {1, 0} or {0, ms until the oldest expires}.
    static let reserveTotalScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
        if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
          local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
          return {0, math.max(1, tonumber(oldest[2]) - now)}
        end
        redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[2])
        return {1, 0}
        """
    )

    /// KEYS[1] the total's set; ARGV: batch.
    static let countScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
        if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
        return redis.call('ZCARD', KEYS[1])
        """
    )

    func challengeKey(_ id: UUID) -> String { "\(prefix):c:{\(id.uuidString.lowercased())}" }
    func peerKey(_ peer: String, _ budget: ChallengeBudget) -> String { "\(prefix):p:{\(peer)}:\(budget.rawValue)" }
    var allKey: String { allKeys[0] }
    var allKeys: [String] {
        totalShards == 1 ? ["\(prefix):{all}"] : (0..<totalShards).map { "\(prefix):{all-\($0)}" }
    }
    func allKey(for peer: String) -> String {
        allKeys[RedisClusterClient.slot(of: Array(peer.utf8)) % totalShards]
    }

    @discardableResult
    public func issue(_ challenge: Challenge, limits: ChallengeLimits) async throws(ChallengeStoreError) -> Challenge {
        let ttl = max(1, Int64((challenge.expiresAt.timeIntervalSinceNow * 1000).rounded()))
        let id = challenge.id.uuidString.lowercased()
        let peer = peerKey(challenge.peerId, challenge.budget)
        let expiresMs: Int64
        do {
            let reply = try await client.evaluate(
                Self.reservePeerScript, keys: [.string(peer)],
                arguments: [.int(ttl), .int(limits.perPeer), .string(id)])
            let (status, value) = try Self.pair(reply)
            guard status == 1 else { throw ChallengeStoreError.rateLimited(retryAfter: .milliseconds(max(value, 1))) }
            expiresMs = value
        } catch let error as ChallengeStoreError {
            throw error
        } catch {
            throw .unavailable("\(error)")
        }
        do {
            let share = limits.total == .max ? Int(Int32.max) : (limits.total + totalShards - 1) / totalShards
            let reply = try await client.evaluate(
                Self.reserveTotalScript, keys: [.string(allKey(for: challenge.peerId))],
                arguments: [.int(expiresMs), .string(id), .int(min(share, Int(Int32.max))), .int(Self.sweepBatch)]
            )
            let (status, value) = try Self.pair(reply)
            guard status == 1 else {
                _ = try? await client.send(["ZREM", .string(peer), .string(id)])
                throw ChallengeStoreError.full(retryAfter: .milliseconds(max(value, 1)))
            }
            let stored = try await client.send([
                "SET", .string(challengeKey(challenge.id)),
                .string("\(challenge.peerId)|\(challenge.nonce.hexString)|\(expiresMs)|\(challenge.budget.rawValue)"),
                "PX", .int(ttl), "NX",
            ])
            guard !stored.isNull else { throw ChallengeStoreError.unavailable("challenge id collision") }
        } catch let error as ChallengeStoreError {
            throw error
        } catch {
            // The reservation stays until it expires: it can only make the peer wait, never admit more.
            throw .unavailable("\(error)")
        }
        let expiresAt = Date(timeIntervalSince1970: Double(expiresMs) / 1000)
        return Challenge(
            id: challenge.id, nonce: challenge.nonce, peerId: challenge.peerId, expiresAt: expiresAt,
            budget: challenge.budget)
    }

    public func consume(_ id: UUID) async throws(ChallengeStoreError) -> Challenge? {
        let reply: RESPValue
        do {
            reply = try await client.send(["GETDEL", .string(challengeKey(id))])
        } catch {
            throw .unavailable(error.description)
        }
        guard let text = reply.string else { return nil }
        let fields = text.split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 4, let nonce = [UInt8](hex: fields[1]), nonce.count == 32,
            let expires = Int64(fields[2]), let budget = ChallengeBudget(rawValue: String(fields[3]))
        else { throw .unavailable("a stored challenge is malformed") }
        let peer = String(fields[0])
        // Tidying: the two sets on their own slots, concurrently; a failure
        // only leaves an entry that expires with its score.
        let member = RESPArgument.string(id.uuidString.lowercased())
        async let fromPeer = try? client.send(["ZREM", .string(peerKey(peer, budget)), member])
        async let fromAll = try? client.send(["ZREM", .string(allKey(for: peer)), member])
        _ = await (fromPeer, fromAll)
        let expiresAt = Date(timeIntervalSince1970: Double(expires) / 1000)
        // Redis drops expired keys itself; this also covers the last millisecond.
        guard expiresAt > Date() else { return nil }
        return Challenge(id: id, nonce: nonce, peerId: peer, expiresAt: expiresAt, budget: budget)
    }

    public func pendingCount() async throws(ChallengeStoreError) -> Int {
        var total = 0
        for key in allKeys {
            do {
                let reply = try await client.evaluate(
                    Self.countScript, keys: [.string(key)], arguments: [.int(Self.sweepBatch)])
                total += Int(reply.integer ?? 0)
            } catch {
                throw .unavailable(error.description)
            }
        }
        return total
    }

    public func checkReady() async throws(ChallengeStoreError) {
        do {
            try await client.checkReady()
        } catch {
            throw .unavailable(error.description)
        }
    }

    private static func pair(_ reply: RESPValue) throws(ChallengeStoreError) -> (Int64, Int64) {
        guard case .array(let parts?) = reply, parts.count == 2, let status = parts[0].integer,
            let value = parts[1].integer
        else { throw .unavailable("unexpected reply from a challenge script") }
        return (status, value)
    }
}
