import TrustQuorum

/// Dialing one peer: its backoff, and when the next attempt is due.
struct Dialer: Sendable, Equatable {
    var backoff = Backoff()
    /// When the next attempt is due (time since the node started); `nil`
    /// while an attempt is under way or its channel is up.
    var due: Duration?
}

// Whom this node dials and when: each pair of peers has one dialer, the
// node whose platform id sorts first. An attempt starts at once when a peer
// is learnt and again at once when its admitted channel closes; after a
// failure or a refusal the next one waits for the backoff (doubling from
// 50 ms to 1 s, jittered with the core's randomness), and `tick(now:)`
// starts the attempts that are due.
extension AgentCore {
    /// Starts dialing the peers of the address book that this node dials and does not dial yet.
    mutating func startDialers() {
        guard halted == nil, !stopping else { return }
        for peer in addressBook.keys.sorted() where peer > settings.platform && dialers[peer] == nil {
            dialers[peer] = Dialer()
            connect(peer, now: nil)
        }
    }

    /// Starts the attempts due at `now`.
    mutating func dialDue(now: Duration) {
        guard halted == nil, !stopping else { return }
        for peer in dialers.keys.sorted() {
            if let due = dialers[peer]?.due, due <= now { connect(peer, now: now) }
        }
    }

    /// An attempt ended: dial again at once after a channel that was up, else after the backoff.
    mutating func dialEnded(_ peer: PlatformId, _ outcome: DialOutcome, now: Duration) {
        guard var dialer = dialers[peer], halted == nil, !stopping else { return }
        switch outcome {
        case .closed:
            dialer.backoff.reset()
            dialers[peer] = dialer
            connect(peer, now: now)
            return
        case .refused:
            dialer.backoff.failed()
        case .unreachable(let reason):
            dialer.backoff.failed()
            if dialer.backoff.shouldLogFailure {
                log(
                    .info, "cannot reach peer; retrying with backoff",
                    [
                        "peer": "\(peer)", "address": addressBook[peer].map { "\($0)" } ?? "?",
                        "attempts": "\(dialer.backoff.failures)", "reason": reason,
                    ])
            }
        }
        dialer.due = now + dialer.backoff.nextDelay(using: &random)
        dialers[peer] = dialer
    }

    /// Emits an attempt to reach `peer`, unless its channel is up already
    /// (it dialled this node): then it is checked again after the backoff
    /// (at the first tick when `now` is not known).
    private mutating func connect(_ peer: PlatformId, now: Duration?) {
        guard let address = addressBook[peer], var dialer = dialers[peer] else { return }
        if connections[peer] != nil {
            dialer.due = (now ?? .zero) + dialer.backoff.nextDelay(using: &random)
        } else {
            dialer.due = nil
            emit(.connect(peer, at: address))
        }
        dialers[peer] = dialer
    }
}
