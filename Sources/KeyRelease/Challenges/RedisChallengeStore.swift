import Foundation
import KeyrackCore
import RedisClient

/// Challenges in Redis, shared by every replica.
///
/// - `<prefix>:c:<id>` holds `peerId|nonceHex|expiresAtMs` with a `PX` TTL,
///   so Redis itself forgets expired challenges.
/// - `<prefix>:p:<peerId>` is a sorted set of the peer's pending ids scored
///   by expiry; `<prefix>:all` the same for every peer (for metrics).
/// - Issuing and consuming are Lua scripts, so each is atomic on the server:
///   the per-peer limit holds however many replicas race, and a challenge is
///   handed out by `consume` at most once. The time comes from Redis (`TIME`)
///   so replicas with skewed clocks agree.
public final class RedisChallengeStore: ChallengeStore {
    private let client: RedisClient
    private let prefix: String

    /// A store on `client` with keys under `prefix`.
    public init(client: RedisClient, prefix: String = "keyrack:kms") {
        self.client = client
        self.prefix = prefix
    }

    static let issueScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local ttl = tonumber(ARGV[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
        if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
          local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
          return {0, tonumber(oldest[2]) - now}
        end
        local expires = now + ttl
        if not redis.call('SET', KEYS[1], ARGV[1] .. '|' .. expires, 'PX', ttl, 'NX') then
          return {2, 0}
        end
        redis.call('ZADD', KEYS[2], expires, ARGV[4])
        redis.call('PEXPIRE', KEYS[2], ttl)
        redis.call('ZADD', KEYS[3], expires, ARGV[4])
        return {1, expires}
        """
    )

    static let consumeScript = RedisScript(
        """
        local v = redis.call('GET', KEYS[1])
        if not v then return false end
        redis.call('DEL', KEYS[1])
        local peer = string.match(v, '^([^|]+)|')
        if peer then redis.call('ZREM', ARGV[1] .. peer, ARGV[2]) end
        redis.call('ZREM', KEYS[2], ARGV[2])
        return v
        """
    )

    static let countScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        return redis.call('ZCARD', KEYS[1])
        """
    )

    private func challengeKey(_ id: UUID) -> RESPArgument { .string("\(prefix):c:\(id.uuidString.lowercased())") }
    private func peerKey(_ peer: String) -> RESPArgument { .string("\(prefix):p:\(peer)") }
    private var allKey: RESPArgument { .string("\(prefix):all") }

    @discardableResult
    public func issue(_ challenge: Challenge, maximumPending: Int) async throws(ChallengeStoreError) -> Challenge {
        let ttl = max(1, Int64((challenge.expiresAt.timeIntervalSinceNow * 1000).rounded()))
        let reply: RESPValue
        do {
            reply = try await client.evaluate(
                Self.issueScript,
                keys: [challengeKey(challenge.id), peerKey(challenge.peerId), allKey],
                arguments: [
                    .string("\(challenge.peerId)|\(challenge.nonce.hexString)"), .int(ttl), .int(maximumPending),
                    .string(challenge.id.uuidString.lowercased()),
                ]
            )
        } catch {
            throw .unavailable(error.description)
        }
        guard case .array(let parts?) = reply, parts.count == 2, let status = parts[0].integer,
            let value = parts[1].integer
        else { throw .unavailable("unexpected reply to the issue script") }
        switch status {
        case 1:
            let expiresAt = Date(timeIntervalSince1970: Double(value) / 1000)
            return Challenge(id: challenge.id, nonce: challenge.nonce, peerId: challenge.peerId, expiresAt: expiresAt)
        case 0: throw .rateLimited(retryAfter: .milliseconds(max(value, 1)))
        default: throw .unavailable("challenge id collision")
        }
    }

    public func consume(_ id: UUID) async throws(ChallengeStoreError) -> Challenge? {
        let reply: RESPValue
        do {
            reply = try await client.evaluate(
                Self.consumeScript,
                keys: [challengeKey(id), allKey],
                arguments: [.string("\(prefix):p:"), .string(id.uuidString.lowercased())]
            )
        } catch {
            throw .unavailable(error.description)
        }
        guard let text = reply.string else { return nil }
        let fields = text.split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 3, let nonce = [UInt8](hex: fields[1]), nonce.count == 32,
            let expires = Int64(fields[2])
        else { throw .unavailable("a stored challenge is malformed") }
        let expiresAt = Date(timeIntervalSince1970: Double(expires) / 1000)
        // Redis drops expired keys itself; this also covers the last millisecond.
        guard expiresAt > Date() else { return nil }
        return Challenge(id: id, nonce: nonce, peerId: String(fields[0]), expiresAt: expiresAt)
    }

    public func pendingCount() async throws(ChallengeStoreError) -> Int {
        do {
            return Int(try await client.evaluate(Self.countScript, keys: [allKey], arguments: []).integer ?? 0)
        } catch {
            throw .unavailable(error.description)
        }
    }

    public func checkReady() async throws(ChallengeStoreError) {
        do {
            _ = try await client.send(["PING"])
        } catch {
            throw .unavailable(error.description)
        }
    }
}
