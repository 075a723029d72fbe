import Foundation

/// Which per-peer budget a challenge counts against.
///
/// Peer ids are public, so anyone can ask for challenges in a peer's name:
/// those requests share the `anonymous` budget. A request that proves it
/// holds the peer's key (`time` and `proof` on `POST /challenge`) counts
/// against the `proven` budget, which anonymous requests cannot spend, so
/// nobody who cannot sign for a peer can lock it out (review M1).
public enum ChallengeBudget: String, Sendable, Equatable, CaseIterable {
    case anonymous, proven
}

/// The limits a store enforces when it issues a challenge.
public struct ChallengeLimits: Sendable, Equatable {
    /// Unexpired challenges one peer may hold in each budget (`MAX_PENDING_CHALLENGES`).
    public var perPeer: Int
    /// Unexpired challenges in the whole store (`MAX_PENDING_CHALLENGES_TOTAL`).
    public var total: Int

    public init(perPeer: Int, total: Int = 100_000) {
        self.perPeer = perPeer
        self.total = total
    }
}

/// A one-time challenge: the nonce a peer must bind into its quote and sign.
public struct Challenge: Sendable, Equatable {
    /// The opaque id the peer sends back (a UUID v4).
    public let id: UUID
    /// 32 random bytes.
    public let nonce: [UInt8]
    /// The peer the challenge was issued to.
    public let peerId: String
    /// When it stops being accepted.
    public let expiresAt: Date
    /// The budget it counts against.
    public let budget: ChallengeBudget

    /// A challenge from its parts.
    public init(id: UUID, nonce: [UInt8], peerId: String, expiresAt: Date, budget: ChallengeBudget = .anonymous) {
        self.id = id
        self.nonce = nonce
        self.peerId = peerId
        self.expiresAt = expiresAt
        self.budget = budget
    }
}

/// Why a store could not issue or consume a challenge.
public enum ChallengeStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer already holds the maximum number of unexpired challenges in
    /// this budget; the oldest expires after `retryAfter`.
    case rateLimited(retryAfter: Duration)
    /// The store holds `MAX_PENDING_CHALLENGES_TOTAL` unexpired challenges;
    /// the oldest expires after `retryAfter`.
    case full(retryAfter: Duration)
    /// The store cannot be reached (Redis down): answer 503, never accept.
    case unavailable(String)

    public var description: String {
        switch self {
        case .rateLimited(let retryAfter): return "too many pending challenges; retry after \(retryAfter)"
        case .full(let retryAfter): return "the challenge store is full; retry after \(retryAfter)"
        case .unavailable(let reason): return "challenge store unavailable: \(reason)"
        }
    }
}

/// Where challenges live between `POST /challenge` and `POST /get-key`.
///
/// Both operations are atomic where it matters: two requests can never both
/// consume one challenge, and the per-peer limit cannot be exceeded by racing
/// requests — across replicas too, for a shared store. The total bounds
/// memory; a shared store may overshoot it by the requests in flight.
public protocol ChallengeStore: Sendable {
    /// Stores `challenge` unless its peer already has `limits.perPeer`
    /// unexpired challenges in its budget or the store holds `limits.total`,
    /// and returns it as stored: a shared store may fix the expiry by its
    /// own clock, and that is the one to report.
    @discardableResult
    func issue(_ challenge: Challenge, limits: ChallengeLimits) async throws(ChallengeStoreError) -> Challenge

    /// Removes and returns the challenge, or `nil` if it is unknown, already
    /// used or expired.
    func consume(_ id: UUID) async throws(ChallengeStoreError) -> Challenge?

    /// How many challenges are pending (for metrics; may count a few expired
    /// ones not yet swept).
    func pendingCount() async throws(ChallengeStoreError) -> Int

    /// Whether the store is reachable (for `/readyz`).
    func checkReady() async throws(ChallengeStoreError)
}

extension ChallengeStore {
    /// Issues with a per-peer limit only.
    @discardableResult
    public func issue(_ challenge: Challenge, maximumPending: Int) async throws(ChallengeStoreError) -> Challenge {
        try await issue(challenge, limits: ChallengeLimits(perPeer: maximumPending, total: .max))
    }
}

extension Duration {
    /// Milliseconds from now until `date`, at least 1.
    static func until(_ date: Date, from now: Date) -> Duration {
        .milliseconds(max(1, Int64((date.timeIntervalSince(now) * 1000).rounded(.up))))
    }
}
