import CoreMetrics
import Prometheus
import Synchronization

/// The KMS's metrics, recorded through swift-metrics and exposed in the
/// Prometheus text format by swift-prometheus — the series names and
/// labels of earlier releases unchanged, so dashboards keep working.
///
/// Each service has its own registry and factory (nothing is bootstrapped
/// globally), so every replica — and every test — exposes exactly its own
/// series. Counters for every outcome exist from the start at zero. Values
/// kept elsewhere (pending challenges, open connections, dropped log
/// lines, PCCS fetches) are read when `/metrics` is scraped.
public final class KMSMetrics: Sendable {
    /// Upper bounds (seconds) of the get-key latency histogram.
    static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    /// Values read at scrape time.
    public struct Scrape: Sendable {
        public var pendingChallenges: Int?
        public var storeReady: Bool?
        public var openConnections: Int?
        public var connectionsRefused: Int?
        public var connectionsTimedOut: Int?
        public var pccsFetches: Int?
        public var pccsFetchFailures: Int?
        public init() {}
    }

    private let registry = PrometheusCollectorRegistry()
    private let challenges: [String: CoreMetrics.Counter]
    private let releases: [String: CoreMetrics.Counter]
    private let latency: CoreMetrics.Timer
    private let proven: CoreMetrics.Counter
    private let wrapped: CoreMetrics.Counter
    private let gauges: [String: CoreMetrics.Gauge]
    /// Counters fed from totals kept elsewhere: the total last added, per name.
    private let mirrored: [String: CoreMetrics.Counter]
    private let mirroredTotals = Mutex([String: Int]())
    /// Per outcome, for ``keyReleases(_:)``.
    private let releaseCounts = Mutex([String: Int]())
    private let droppedLogLines: @Sendable () -> Int

    /// Metrics; `droppedLogLines` reads how many log lines the log writer dropped.
    public init(droppedLogLines: @escaping @Sendable () -> Int = { 0 }) {
        self.droppedLogLines = droppedLogLines
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["keyrack_kms_get_key_seconds"] = Self.bounds.map {
            .nanoseconds(Int64(($0 * 1e9).rounded()))
        }
        let outcomes = KMSError.Code.allCases.map(\.rawValue)
        challenges = Dictionary(
            uniqueKeysWithValues: (["Issued"] + outcomes).map {
                ($0, Counter(label: "keyrack_kms_challenges_total", dimensions: [("outcome", $0)], factory: factory))
            })
        releases = Dictionary(
            uniqueKeysWithValues: (["Released"] + outcomes).map {
                ($0, Counter(label: "keyrack_kms_key_requests_total", dimensions: [("outcome", $0)], factory: factory))
            })
        latency = Timer(label: "keyrack_kms_get_key_seconds", factory: factory)
        proven = Counter(label: "keyrack_kms_challenges_proven_total", factory: factory)
        wrapped = Counter(label: "keyrack_kms_keys_wrapped_total", factory: factory)
        gauges = Dictionary(
            uniqueKeysWithValues: [
                "keyrack_kms_pending_challenges", "keyrack_kms_store_ready", "keyrack_kms_open_connections",
            ]
            .map { ($0, Gauge(label: $0, factory: factory)) })
        mirrored = Dictionary(
            uniqueKeysWithValues: [
                "keyrack_kms_log_lines_dropped_total", "keyrack_kms_connections_refused_total",
                "keyrack_kms_connections_timed_out_total", "keyrack_kms_pccs_fetches_total",
                "keyrack_kms_pccs_fetch_failures_total",
            ].map { ($0, Counter(label: $0, factory: factory)) })
    }

    func recordChallenge(_ failure: KMSError.Code?, proven isProven: Bool = false) {
        challenges[failure?.rawValue ?? "Issued"]?.increment()
        if failure == nil && isProven { proven.increment() }
    }

    func recordWrapped() { wrapped.increment() }

    func recordKeyRelease(_ failure: KMSError.Code?, duration: Duration) {
        let outcome = failure?.rawValue ?? "Released"
        releases[outcome]?.increment()
        releaseCounts.withLock { $0[outcome, default: 0] += 1 }
        let (seconds, attoseconds) = duration.components
        latency.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// How many get-key requests ended with `outcome` (`Released` or an error code).
    public func keyReleases(_ outcome: String) -> Int { releaseCounts.withLock { $0[outcome] ?? 0 } }

    /// The Prometheus text exposition, with the values read at this scrape.
    public func render(_ scrape: Scrape) -> String {
        if let pending = scrape.pendingChallenges { gauges["keyrack_kms_pending_challenges"]?.record(pending) }
        if let ready = scrape.storeReady { gauges["keyrack_kms_store_ready"]?.record(ready ? 1 : 0) }
        if let open = scrape.openConnections { gauges["keyrack_kms_open_connections"]?.record(open) }
        let totals: [(String, Int?)] = [
            ("keyrack_kms_log_lines_dropped_total", droppedLogLines()),
            ("keyrack_kms_connections_refused_total", scrape.connectionsRefused),
            ("keyrack_kms_connections_timed_out_total", scrape.connectionsTimedOut),
            ("keyrack_kms_pccs_fetches_total", scrape.pccsFetches),
            ("keyrack_kms_pccs_fetch_failures_total", scrape.pccsFetchFailures),
        ]
        // Scrapes may race: the delta is taken under the lock, so each unit is added once.
        let deltas: [(String, Int)] = mirroredTotals.withLock { last in
            totals.compactMap { name, total in
                guard let total else { return nil }
                let delta = total - last[name, default: 0]
                guard delta > 0 else { return nil }
                last[name] = total
                return (name, delta)
            }
        }
        for (name, delta) in deltas { mirrored[name]?.increment(by: delta) }
        return registry.emitToString()
    }
}
