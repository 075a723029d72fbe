/// The delay between attempts to reach a peer: doubling from ``initial`` up
/// to ``maximum``, each draw jittered by ±20 % with the caller's randomness
/// (so tests choose it), reset when a channel was up.
public struct Backoff: Sendable, Equatable {
    /// The first delay.
    public let initial: Duration
    /// The longest delay.
    public let maximum: Duration
    /// The delay the next draw is jittered around.
    public private(set) var current: Duration
    /// Failed attempts since the last reset.
    public private(set) var failures = 0

    /// A backoff from `initial` doubling up to `maximum`.
    public init(initial: Duration = .milliseconds(50), maximum: Duration = .milliseconds(1000)) {
        self.initial = initial
        self.maximum = maximum
        self.current = initial
    }

    /// The next delay (jittered within 0.8–1.2 of ``current``); the one after is twice as long, up to ``maximum``.
    public mutating func nextDelay(using random: inout some RandomNumberGenerator) -> Duration {
        let delay = current * Double.random(in: 0.8...1.2, using: &random)
        current = min(current * 2, maximum)
        return delay
    }

    /// An attempt failed.
    public mutating func failed() { failures += 1 }

    /// A channel was up: start again from ``initial``.
    public mutating func reset() {
        current = initial
        failures = 0
    }

    /// Whether this failure is worth a log line: the first and every tenth,
    /// so that a peer that is down does not flood the log.
    public var shouldLogFailure: Bool { failures == 1 || failures % 10 == 0 }
}
