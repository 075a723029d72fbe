import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// A node's metrics, recorded through swift-metrics and exposed in the
/// Prometheus text format by swift-prometheus (`metricsListen`), one
/// registry per node. What the node's status already holds — unlocked or
/// not, epochs, peers, alarms, refused messages — is read when scraped;
/// what only happens in passing — failed handshakes, dials and
/// attestations by reason, ledger write latency — is counted as it happens,
/// and reported in ``NodeStatus/counters`` too (`keyrack rack status --json`).
///
/// Series:
/// - `keyrack_node_unlocked` (0/1), `keyrack_node_committed_epoch`,
///   `keyrack_node_unlocked_epoch`, `keyrack_node_highest_epoch_seen`,
///   `keyrack_node_peers_connected`, `keyrack_node_alarms`,
///   `keyrack_node_expunged` (0/1), `keyrack_node_volumes{state}`;
/// - `keyrack_node_handshakes_failed_total{reason}` (TLS: a refused or
///   missing certificate, a timeout, an abort), `keyrack_node_dials_failed_total`
///   (a peer's address did not answer), `keyrack_node_attestations_failed_total{reason}`,
///   `keyrack_node_messages_rejected_total`;
/// - `keyrack_node_ledger_write_seconds` (histogram), `keyrack_node_ledger_writes_failed_total`.
public final class NodeMetrics: Sendable {
    /// Upper bounds (seconds) of the ledger write histogram.
    static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let gauges: [String: CoreMetrics.Gauge]
    private let ledgerWrites: CoreMetrics.Timer
    private let ledgerWriteFailures: CoreMetrics.Counter
    private let dialFailures: CoreMetrics.Counter
    private let rejected: CoreMetrics.Counter
    private let handshakeCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let attestationCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let volumeGauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    private let totals = Mutex(NodeCounters())
    private let rejectedMirrored = Mutex(0)

    /// The most distinct reasons kept per failure series (a peer cannot grow the registry without bound).
    static let reasonLimit = 32

    /// Gauges read from the status at each scrape.
    static let gaugeNames = [
        "keyrack_node_unlocked", "keyrack_node_committed_epoch", "keyrack_node_unlocked_epoch",
        "keyrack_node_highest_epoch_seen", "keyrack_node_peers_connected", "keyrack_node_alarms",
        "keyrack_node_expunged",
    ]

    /// Empty metrics.
    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["keyrack_node_ledger_write_seconds"] = Self.bounds.map {
            .nanoseconds(Int64(($0 * 1e9).rounded()))
        }
        self.factory = factory
        gauges = Dictionary(uniqueKeysWithValues: Self.gaugeNames.map { ($0, Gauge(label: $0, factory: factory)) })
        ledgerWrites = Timer(label: "keyrack_node_ledger_write_seconds", factory: factory)
        ledgerWriteFailures = Counter(label: "keyrack_node_ledger_writes_failed_total", factory: factory)
        dialFailures = Counter(label: "keyrack_node_dials_failed_total", factory: factory)
        rejected = Counter(label: "keyrack_node_messages_rejected_total", factory: factory)
    }

    /// A TLS handshake with a peer failed (either direction), with its error code.
    func handshakeFailed(_ reason: String) {
        count(reason, in: handshakeCounters, label: "keyrack_node_handshakes_failed_total")
        totals.withLock { $0.handshakesFailed[Self.kept(reason, $0.handshakesFailed), default: 0] += 1 }
    }

    /// A peer's address did not answer a dial.
    func dialFailed() {
        dialFailures.increment()
        totals.withLock { $0.dialsFailed += 1 }
    }

    /// A peer's attestation failed, with its error code.
    func attestationFailed(_ reason: String) {
        count(reason, in: attestationCounters, label: "keyrack_node_attestations_failed_total")
        totals.withLock { $0.attestationsFailed[Self.kept(reason, $0.attestationsFailed), default: 0] += 1 }
    }

    /// A ledger write took `duration` (or failed).
    func ledgerWritten(_ duration: Duration, failed: Bool) {
        if failed {
            ledgerWriteFailures.increment()
        } else {
            let (seconds, attoseconds) = duration.components
            ledgerWrites.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        }
        totals.withLock { totals in
            if failed {
                totals.ledgerWritesFailed += 1
            } else {
                totals.ledgerWrites += 1
                totals.ledgerWriteSeconds +=
                    Double(duration.components.seconds)
                    + Double(duration.components.attoseconds) / 1e18
            }
        }
    }

    /// The counts so far, for the status.
    public var counters: NodeCounters { totals.withLock { $0 } }

    /// The Prometheus text exposition, with `status`'s values read now.
    public func render(_ status: NodeStatus) -> String {
        let values: [String: Int] = [
            "keyrack_node_unlocked": status.unlockedEpoch != nil && status.unlockedEpoch == status.committedEpoch
                ? 1 : 0,
            "keyrack_node_committed_epoch": Int(clamping: status.committedEpoch?.value ?? 0),
            "keyrack_node_unlocked_epoch": Int(clamping: status.unlockedEpoch?.value ?? 0),
            "keyrack_node_highest_epoch_seen": Int(clamping: status.highestEpochSeen?.value ?? 0),
            "keyrack_node_peers_connected": status.connected.count,
            "keyrack_node_alarms": status.alarms.count,
            "keyrack_node_expunged": status.expunged == nil ? 0 : 1,
        ]
        for (name, value) in values { gauges[name]?.record(value) }
        var states: [String: Int] = [:]
        for volume in status.volumes { states[volume.state.rawValue, default: 0] += 1 }
        volumeGauges.withLock { gauges in
            for state in Set(gauges.keys).union(states.keys) {
                let gauge =
                    gauges[state]
                    ?? Gauge(label: "keyrack_node_volumes", dimensions: [("state", state)], factory: factory)
                gauges[state] = gauge
                gauge.record(states[state] ?? 0)
            }
        }
        // The status's running total becomes a counter: the delta since the last scrape is added once.
        let delta = rejectedMirrored.withLock { last in
            let delta = max(0, status.rejected - last)
            last = max(last, status.rejected)
            return delta
        }
        if delta > 0 { rejected.increment(by: delta) }
        return registry.emitToString()
    }

    private func count(_ reason: String, in counters: borrowing Mutex<[String: CoreMetrics.Counter]>, label: String) {
        let factory = factory
        let counter = counters.withLock { counters in
            let key = Self.kept(reason, counters)
            if let existing = counters[key] { return existing }
            let made = Counter(label: label, dimensions: [("reason", key)], factory: factory)
            counters[key] = made
            return made
        }
        counter.increment()
    }

    /// `reason`, or `other` once ``reasonLimit`` distinct reasons are kept.
    private static func kept<Value>(_ reason: String, _ existing: [String: Value]) -> String {
        existing[reason] != nil || existing.count < reasonLimit - 1 ? reason : "other"
    }
}

/// What a node counted since it started, in its status
/// (`keyrack node status`, `keyrack rack status --json`).
public struct NodeCounters: Codable, Sendable, Equatable {
    /// Failed TLS handshakes with peers, by error code.
    public var handshakesFailed: [String: Int] = [:]
    /// Dials whose address did not answer.
    public var dialsFailed = 0
    /// Failed peer attestations, by error code.
    public var attestationsFailed: [String: Int] = [:]
    /// Ledger writes, and the seconds they took in all.
    public var ledgerWrites = 0
    /// The seconds the ledger writes took in all.
    public var ledgerWriteSeconds = 0.0
    /// Ledger writes that failed.
    public var ledgerWritesFailed = 0

    /// No counts.
    public init() {}
}
