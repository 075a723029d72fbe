import Foundation
import Synchronization

/// Challenges in this process's memory: for a single replica.
///
/// A map from id to challenge plus, per peer and budget, its pending ids
/// ordered by expiry (at most the per-peer limit, so checks are cheap), and
/// a queue of every issued id in issue order. Expired entries are dropped
/// when their peer asks again and, on every operation, from the head of the
/// queue — at most ``sweepBatch`` of them, so no operation ever walks the
/// whole map under the lock (review M1) however many challenges are pending.
public final class MemoryChallengeStore: ChallengeStore {
    private struct PeerKey: Hashable {
        let peer: String
        let budget: ChallengeBudget
    }

    private struct Queued {
        let id: UUID
        let key: PeerKey
        let expiresAt: Date
    }

    private struct State {
        var challenges: [UUID: Challenge] = [:]
        var pendingByPeer: [PeerKey: [(id: UUID, expiresAt: Date)]] = [:]
        /// Issued ids, oldest first; `head` is the first not yet swept.
        var queue: [Queued] = []
        var head = 0
    }

    /// Queue entries (expired or already consumed) passed per operation, at most.
    public static let sweepBatch = 64

    private let state = Mutex(State())
    private let now: @Sendable () -> Date

    /// A store that reads the time from `now` (injectable for tests).
    public init(now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
    }

    @discardableResult
    public func issue(_ challenge: Challenge, limits: ChallengeLimits) throws(ChallengeStoreError) -> Challenge {
        let current = now()
        let key = PeerKey(peer: challenge.peerId, budget: challenge.budget)
        let refusal: ChallengeStoreError? = state.withLock { state in
            Self.sweep(&state, at: current)
            var pending = state.pendingByPeer[key, default: []]
            while let first = pending.first, first.expiresAt <= current {
                state.challenges[first.id] = nil
                pending.removeFirst()
            }
            if pending.count >= limits.perPeer {
                state.pendingByPeer[key] = pending
                return .rateLimited(retryAfter: .until(pending[0].expiresAt, from: current))
            }
            if state.challenges.count >= limits.total {
                state.pendingByPeer[key] = pending.isEmpty ? nil : pending
                // The oldest pending one is near the head (bounded look, never the whole queue).
                let window = state.queue[state.head..<min(state.queue.count, state.head + Self.sweepBatch)]
                let oldest = window.first { state.challenges[$0.id] != nil }
                return .full(retryAfter: .until(oldest?.expiresAt ?? current + 1, from: current))
            }
            state.challenges[challenge.id] = challenge
            let index = pending.firstIndex { $0.expiresAt > challenge.expiresAt } ?? pending.endIndex
            pending.insert((challenge.id, challenge.expiresAt), at: index)
            state.pendingByPeer[key] = pending
            state.queue.append(Queued(id: challenge.id, key: key, expiresAt: challenge.expiresAt))
            return nil
        }
        if let refusal { throw refusal }
        return challenge
    }

    public func consume(_ id: UUID) -> Challenge? {
        let current = now()
        return state.withLock { state in
            Self.sweep(&state, at: current)
            guard let challenge = state.challenges.removeValue(forKey: id) else { return nil }
            let key = PeerKey(peer: challenge.peerId, budget: challenge.budget)
            if var pending = state.pendingByPeer[key] {
                pending.removeAll { $0.id == id }
                state.pendingByPeer[key] = pending.isEmpty ? nil : pending
            }
            return challenge.expiresAt > current ? challenge : nil
        }
    }

    public func pendingCount() -> Int {
        let current = now()
        return state.withLock { state in
            Self.sweep(&state, at: current)
            return state.challenges.count
        }
    }

    public func checkReady() {}

    /// Drops up to ``sweepBatch`` expired entries from the head of the queue.
    private static func sweep(_ state: inout State, at current: Date) {
        var steps = 0
        while steps < sweepBatch, state.head < state.queue.count {
            let entry = state.queue[state.head]
            // Consumed entries are passed over; an unexpired pending head stops the sweep.
            if state.challenges[entry.id] != nil {
                guard entry.expiresAt <= current else { break }
                state.challenges[entry.id] = nil
                if var pending = state.pendingByPeer[entry.key] {
                    pending.removeAll { $0.id == entry.id }
                    state.pendingByPeer[entry.key] = pending.isEmpty ? nil : pending
                }
            }
            state.head += 1
            steps += 1
        }
        // Compact the queue once its swept prefix is most of it (amortised O(1)).
        if state.head > 1024 && state.head * 2 > state.queue.count {
            state.queue.removeFirst(state.head)
            state.head = 0
        }
    }
}
