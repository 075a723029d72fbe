import Foundation
import KeyrackCore
import RedisClient

/// Challenges in Redis, shared by every replica — one server or a Redis
/// Cluster alike.
///
/// Keys carry hash tags so that every script touches one slot, as a Redis
/// Cluster requires:
/// - `<prefix>:p:{<peerId>}:<budget>` is a sorted set of the peer's pending
///   ids in that budget, scored by expiry (the per-peer limit);
/// - `<prefix>:{all}` the same for every challenge (the total limit and
///   metrics), and `<prefix>:{all}:c:<id>` the challenge itself,
///   `peerId|nonceHex|expiresAtMs|budget` with a `PX` TTL, so Redis itself
///   forgets expired challenges. On a cluster the total is split into
///   shards `<prefix>:{all-<n>}`, a challenge living in shard (first byte of
///   its id) mod n beside its shard's set, each shard holding its share of
///   the total: a master that is down stops only the peers and challenges
///   whose keys it holds.
///
/// On one server issuing is one script (per-peer limit, total, store) and
/// consuming one script (get, delete, leave the total). On a cluster issuing
/// is two, each atomic on its own slot: the per-peer reservation (so racing
/// replicas never exceed the limit), then the total and the store in the
/// challenge's shard (over the total, the reservation is undone). Either
/// way a challenge is handed out at most once; leaving the peer's set after
/// a consume is a second command (a failure there leaves an entry that
/// expires with its score). A single-server store (`totalShards` 1) must
/// not be pointed at a cluster: its issue script spans two slots. The time comes from Redis (`TIME`)
/// so replicas with skewed clocks agree. Expired entries leave the sets in
/// bounded batches.
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

    /// The parts every issue script shares, with `$NAME` placeholders: the peer's set
    /// reserved (per-peer limit) and the total checked and the challenge
    /// stored (in the shard).
    private static let reservePeer = """
        redis.call('ZREMRANGEBYSCORE', $PEER, '-inf', now)
        if redis.call('ZCARD', $PEER) >= tonumber($PERPEER) then
          local oldest = redis.call('ZRANGE', $PEER, 0, 0, 'WITHSCORES')
          return {0, tonumber(oldest[2]) - now}
        end
        """
    private static let storeInShard = """
        local old = redis.call('ZRANGEBYSCORE', $ALL, '-inf', now, 'LIMIT', 0, tonumber($BATCH))
        if #old > 0 then redis.call('ZREM', $ALL, unpack(old)) end
        if redis.call('ZCARD', $ALL) >= tonumber($TOTAL) then
          local oldest = redis.call('ZRANGE', $ALL, 0, 0, 'WITHSCORES')
          return {3, math.max(1, tonumber(oldest[2]) - now)}
        end
        if not redis.call('SET', $CHALLENGE, $VALUE .. '|' .. expires .. '|' .. $BUDGET, 'PX', ttl, 'NX') then
          return {2, 0}
        end
        redis.call('ZADD', $ALL, expires, $ID)
        """
    private static let clock = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    private static func script(_ text: String, _ names: [String: String]) -> String {
        names.reduce(text) { $0.replacingOccurrences(of: $1.key, with: $1.value) }
    }

    /// One server: KEYS peer set, total set, challenge; ARGV ttl, limit,
    /// id, total, batch, value, budget. {1, expires} | {0, wait} (peer) |
    /// {3, wait} (total) | {2, 0} (collision).
    static let issueScript = RedisScript(
        clock + "\nlocal ttl = tonumber(ARGV[1])\nlocal expires = now + ttl\n"
            + script(
                reservePeer + "\n" + storeInShard,
                [
                    "$PEER": "KEYS[1]", "$ALL": "KEYS[2]", "$CHALLENGE": "KEYS[3]", "$PERPEER": "ARGV[2]",
                    "$ID": "ARGV[3]", "$TOTAL": "ARGV[4]", "$BATCH": "ARGV[5]", "$VALUE": "ARGV[6]",
                    "$BUDGET": "ARGV[7]",
                ])
            + "\nredis.call('ZADD', KEYS[1], expires, ARGV[3])\nredis.call('PEXPIRE', KEYS[1], ttl)\nreturn {1, expires}\n"
    )

    /// A cluster, step 1: KEYS the peer's set; ARGV ttl, limit, id.
    static let reservePeerScript = RedisScript(
        clock + "\nlocal ttl = tonumber(ARGV[1])\nlocal expires = now + ttl\n"
            + script(reservePeer, ["$PEER": "KEYS[1]", "$PERPEER": "ARGV[2]"])
            + "\nredis.call('ZADD', KEYS[1], expires, ARGV[3])\nredis.call('PEXPIRE', KEYS[1], ttl)\nreturn {1, expires}\n"
    )

    /// A cluster, step 2: KEYS the shard's set, the challenge; ARGV ttl,
    /// expires, id, share of the total, batch, value, budget.
    static let storeScript = RedisScript(
        clock + "\nlocal ttl = tonumber(ARGV[1])\nlocal expires = tonumber(ARGV[2])\n"
            + script(
                storeInShard,
                [
                    "$ALL": "KEYS[1]", "$CHALLENGE": "KEYS[2]", "$ID": "ARGV[3]", "$TOTAL": "ARGV[4]",
                    "$BATCH": "ARGV[5]", "$VALUE": "ARGV[6]", "$BUDGET": "ARGV[7]",
                ]) + "\nreturn {1, expires}\n"
    )

    /// KEYS the challenge, its shard's set; ARGV id. The stored value, or false.
    static let consumeScript = RedisScript(
        """
        local v = redis.call('GET', KEYS[1])
        if not v then return false end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return v
        """
    )

    /// KEYS[1] the total's set; ARGV: batch.
    static let countScript = RedisScript(
        clock + "\n"
            + """
            local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
            if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
            return redis.call('ZCARD', KEYS[1])
            """
    )

    func shard(of id: UUID) -> Int { Int(id.uuid.0) % totalShards }
    func allKey(shard: Int) -> String { totalShards == 1 ? "\(prefix):{all}" : "\(prefix):{all-\(shard)}" }
    var allKeys: [String] { (0..<totalShards).map(allKey(shard:)) }
    func challengeKey(_ id: UUID) -> String { "\(allKey(shard: shard(of: id))):c:\(id.uuidString.lowercased())" }
    func peerKey(_ peer: String, _ budget: ChallengeBudget) -> String { "\(prefix):p:{\(peer)}:\(budget.rawValue)" }

    @discardableResult
    public func issue(_ challenge: Challenge, limits: ChallengeLimits) async throws(ChallengeStoreError) -> Challenge {
        let ttl = max(1, Int64((challenge.expiresAt.timeIntervalSinceNow * 1000).rounded()))
        let id = challenge.id.uuidString.lowercased()
        let peer = peerKey(challenge.peerId, challenge.budget)
        let shardSet = allKey(shard: shard(of: challenge.id))
        let share = limits.total == .max ? Int(Int32.max) : (limits.total + totalShards - 1) / totalShards
        let value = "\(challenge.peerId)|\(challenge.nonce.hexString)"
        let expiresMs: Int64
        do {
            if totalShards == 1 {
                let reply = try await client.evaluate(
                    Self.issueScript,
                    keys: [.string(peer), .string(shardSet), .string(challengeKey(challenge.id))],
                    arguments: [
                        .int(ttl), .int(limits.perPeer), .string(id), .int(min(share, Int(Int32.max))),
                        .int(Self.sweepBatch), .string(value), .string(challenge.budget.rawValue),
                    ])
                expiresMs = try Self.outcome(reply)
            } else {
                let reserved = try await client.evaluate(
                    Self.reservePeerScript, keys: [.string(peer)],
                    arguments: [.int(ttl), .int(limits.perPeer), .string(id)])
                let expires = try Self.outcome(reserved)
                do {
                    let stored = try await client.evaluate(
                        Self.storeScript, keys: [.string(shardSet), .string(challengeKey(challenge.id))],
                        arguments: [
                            .int(ttl), .int(expires), .string(id), .int(min(share, Int(Int32.max))),
                            .int(Self.sweepBatch), .string(value), .string(challenge.budget.rawValue),
                        ])
                    expiresMs = try Self.outcome(stored)
                } catch {
                    // Refused or failed: give the peer its place back (best effort: it expires anyway).
                    _ = try? await client.send(["ZREM", .string(peer), .string(id)])
                    throw error
                }
            }
        } catch let error as ChallengeStoreError {
            throw error
        } catch {
            throw .unavailable("\(error)")
        }
        let expiresAt = Date(timeIntervalSince1970: Double(expiresMs) / 1000)
        return Challenge(
            id: challenge.id, nonce: challenge.nonce, peerId: challenge.peerId, expiresAt: expiresAt,
            budget: challenge.budget)
    }

    public func consume(_ id: UUID) async throws(ChallengeStoreError) -> Challenge? {
        let member = RESPArgument.string(id.uuidString.lowercased())
        let reply: RESPValue
        do {
            reply = try await client.evaluate(
                Self.consumeScript, keys: [.string(challengeKey(id)), .string(allKey(shard: shard(of: id)))],
                arguments: [member])
        } catch {
            throw .unavailable(error.description)
        }
        guard let text = reply.string else { return nil }
        let fields = text.split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 4, let nonce = [UInt8](hex: fields[1]), nonce.count == 32,
            let expires = Int64(fields[2]), let budget = ChallengeBudget(rawValue: String(fields[3]))
        else { throw .unavailable("a stored challenge is malformed") }
        let peer = String(fields[0])
        // The peer's set is on another slot: its own command. A failure there
        // only leaves an entry that expires with its score.
        _ = try? await client.send(["ZREM", .string(peerKey(peer, budget)), member])
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

    /// The expiry from a script's `{1, expires}`, or the refusal it answered.
    private static func outcome(_ reply: RESPValue) throws(ChallengeStoreError) -> Int64 {
        guard case .array(let parts?) = reply, parts.count == 2, let status = parts[0].integer,
            let value = parts[1].integer
        else { throw .unavailable("unexpected reply from a challenge script") }
        switch status {
        case 1: return value
        case 0: throw .rateLimited(retryAfter: .milliseconds(max(value, 1)))
        case 3: throw .full(retryAfter: .milliseconds(max(value, 1)))
        default: throw .unavailable("challenge id collision")
        }
    }
}
