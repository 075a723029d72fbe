import Foundation

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

    /// A challenge from its parts.
    public init(id: UUID, nonce: [UInt8], peerId: String, expiresAt: Date) {
        self.id = id
        self.nonce = nonce
        self.peerId = peerId
        self.expiresAt = expiresAt
    }
}

/// Why a store could not issue or consume a challenge.
public enum ChallengeStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer already holds the maximum number of unexpired challenges;
    /// the oldest expires after `retryAfter`.
    case rateLimited(retryAfter: Duration)
    /// The store cannot be reached (Redis down): answer 503, never accept.
    case unavailable(String)

    public var description: String {
        switch self {
        case .rateLimited(let retryAfter): return "too many pending challenges; retry after \(retryAfter)"
        case .unavailable(let reason): return "challenge store unavailable: \(reason)"
        }
    }
}

/// Where challenges live between `POST /challenge` and `POST /get-key`.
///
/// Both operations are atomic: two requests can never both consume one
/// challenge, and the per-peer limit cannot be exceeded by racing requests —
/// across replicas too, for a shared store.
public protocol ChallengeStore: Sendable {
    /// Stores `challenge` unless its peer already has `maximumPending`
    /// unexpired challenges, and returns it as stored: a shared store may
    /// fix the expiry by its own clock, and that is the one to report.
    @discardableResult
    func issue(_ challenge: Challenge, maximumPending: Int) async throws(ChallengeStoreError) -> Challenge

    /// Removes and returns the challenge, or `nil` if it is unknown, already
    /// used or expired.
    func consume(_ id: UUID) async throws(ChallengeStoreError) -> Challenge?

    /// How many unexpired challenges are pending (for metrics).
    func pendingCount() async throws(ChallengeStoreError) -> Int

    /// Whether the store is reachable (for `/readyz`).
    func checkReady() async throws(ChallengeStoreError)
}
