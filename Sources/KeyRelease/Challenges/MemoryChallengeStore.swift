import Foundation
import Synchronization

/// Challenges in this process's memory: for a single replica.
///
/// A map from id to challenge plus, per peer, its pending ids ordered by
/// expiry (at most the per-peer limit, so checks are cheap). Expired entries
/// are dropped when their peer asks again and by a sweep at most once a
/// second.
public final class MemoryChallengeStore: ChallengeStore {
    private struct State {
        var challenges: [UUID: Challenge] = [:]
        var pendingByPeer: [String: [(id: UUID, expiresAt: Date)]] = [:]
        var lastSweep = Date.distantPast
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> Date

    /// A store that reads the time from `now` (injectable for tests).
    public init(now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
    }

    @discardableResult
    public func issue(_ challenge: Challenge, maximumPending: Int) throws(ChallengeStoreError) -> Challenge {
        let current = now()
        let refusal: Duration? = state.withLock { state in
            Self.sweepIfDue(&state, at: current)
            var pending = state.pendingByPeer[challenge.peerId, default: []]
            while let first = pending.first, first.expiresAt <= current {
                state.challenges[first.id] = nil
                pending.removeFirst()
            }
            if pending.count >= maximumPending {
                state.pendingByPeer[challenge.peerId] = pending
                let wait = pending[0].expiresAt.timeIntervalSince(current)
                return .milliseconds(Int64((wait * 1000).rounded(.up)))
            }
            state.challenges[challenge.id] = challenge
            let index = pending.firstIndex { $0.expiresAt > challenge.expiresAt } ?? pending.endIndex
            pending.insert((challenge.id, challenge.expiresAt), at: index)
            state.pendingByPeer[challenge.peerId] = pending
            return nil
        }
        if let refusal { throw .rateLimited(retryAfter: refusal) }
        return challenge
    }

    public func consume(_ id: UUID) -> Challenge? {
        let current = now()
        return state.withLock { state in
            guard let challenge = state.challenges.removeValue(forKey: id) else { return nil }
            if var pending = state.pendingByPeer[challenge.peerId] {
                pending.removeAll { $0.id == id }
                state.pendingByPeer[challenge.peerId] = pending.isEmpty ? nil : pending
            }
            return challenge.expiresAt > current ? challenge : nil
        }
    }

    public func pendingCount() -> Int {
        let current = now()
        return state.withLock { state in state.challenges.values.count { $0.expiresAt > current } }
    }

    public func checkReady() {}

    private static func sweepIfDue(_ state: inout State, at current: Date) {
        guard current.timeIntervalSince(state.lastSweep) >= 1 else { return }
        state.lastSweep = current
        for (id, challenge) in state.challenges where challenge.expiresAt <= current {
            state.challenges[id] = nil
        }
        for (peer, pending) in state.pendingByPeer {
            let live = pending.filter { $0.expiresAt > current }
            state.pendingByPeer[peer] = live.isEmpty ? nil : live
        }
    }
}
