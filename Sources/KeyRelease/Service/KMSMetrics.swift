import Synchronization

/// Counters and latency histograms for `/metrics`, rendered in the
/// Prometheus text format. Kept here (rather than through a metrics backend)
/// so that every replica exposes the same series with no global state.
public final class KMSMetrics: Sendable {
    private struct State {
        var challenges: [String: Int] = [:]
        var releases: [String: Int] = [:]
        var latencyBuckets = [Int](repeating: 0, count: KMSMetrics.bounds.count)
        var latencyCount = 0
        var latencySum = 0.0
    }

    /// Upper bounds (seconds) of the get-key latency histogram.
    static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    private let state = Mutex(State())
    private let droppedLogLines: @Sendable () -> Int

    /// Metrics; `droppedLogLines` reads how many log lines the log writer dropped.
    public init(droppedLogLines: @escaping @Sendable () -> Int = { 0 }) {
        self.droppedLogLines = droppedLogLines
    }

    func recordChallenge(_ failure: KMSError.Code?) {
        state.withLock { $0.challenges[failure?.rawValue ?? "Issued", default: 0] += 1 }
    }

    func recordKeyRelease(_ failure: KMSError.Code?, duration: Duration) {
        let seconds = duration.seconds
        state.withLock { state in
            state.releases[failure?.rawValue ?? "Released", default: 0] += 1
            state.latencyCount += 1
            state.latencySum += seconds
            for (index, bound) in Self.bounds.enumerated() where seconds <= bound { state.latencyBuckets[index] += 1 }
        }
    }

    /// How many get-key requests ended with `outcome` (`Released` or an error code).
    public func keyReleases(_ outcome: String) -> Int { state.withLock { $0.releases[outcome] ?? 0 } }

    /// The Prometheus text exposition, with `pendingChallenges` as a gauge.
    public func render(pendingChallenges: Int?, extra: [String] = []) -> String {
        let snapshot = state.withLock { $0 }
        var lines: [String] = []
        lines.append("# HELP keyrack_kms_challenges_total POST /challenge requests by outcome.")
        lines.append("# TYPE keyrack_kms_challenges_total counter")
        for (outcome, count) in snapshot.challenges.sorted(by: { $0.key < $1.key }) {
            lines.append("keyrack_kms_challenges_total{outcome=\"\(outcome)\"} \(count)")
        }
        lines.append("# HELP keyrack_kms_key_requests_total POST /get-key requests by outcome.")
        lines.append("# TYPE keyrack_kms_key_requests_total counter")
        for (outcome, count) in snapshot.releases.sorted(by: { $0.key < $1.key }) {
            lines.append("keyrack_kms_key_requests_total{outcome=\"\(outcome)\"} \(count)")
        }
        lines.append("# HELP keyrack_kms_get_key_seconds Time to answer POST /get-key.")
        lines.append("# TYPE keyrack_kms_get_key_seconds histogram")
        for (index, bound) in Self.bounds.enumerated() {
            lines.append("keyrack_kms_get_key_seconds_bucket{le=\"\(bound)\"} \(snapshot.latencyBuckets[index])")
        }
        lines.append("keyrack_kms_get_key_seconds_bucket{le=\"+Inf\"} \(snapshot.latencyCount)")
        lines.append("keyrack_kms_get_key_seconds_sum \(snapshot.latencySum)")
        lines.append("keyrack_kms_get_key_seconds_count \(snapshot.latencyCount)")
        if let pendingChallenges {
            lines.append("# HELP keyrack_kms_pending_challenges Unexpired challenges in the store.")
            lines.append("# TYPE keyrack_kms_pending_challenges gauge")
            lines.append("keyrack_kms_pending_challenges \(pendingChallenges)")
        }
        lines.append(
            "# HELP keyrack_kms_log_lines_dropped_total Log lines dropped because the log's reader fell behind.")
        lines.append("# TYPE keyrack_kms_log_lines_dropped_total counter")
        lines.append("keyrack_kms_log_lines_dropped_total \(droppedLogLines())")
        lines += extra
        return lines.joined(separator: "\n") + "\n"
    }
}
