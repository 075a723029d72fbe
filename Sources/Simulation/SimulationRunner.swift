import Foundation
import TrustQuorum

/// Runs a simulation for the command line: times it and renders the JSON
/// summary and the event log.
public enum SimulationRunner {
    /// A finished run.
    public struct Outcome {
        /// The options of the run.
        public let options: SimulationOptions
        /// What happened.
        public let report: SimulationReport
        /// Every event applied.
        public let events: [SimulationEvent]
        /// Wall-clock seconds the run took.
        public let seconds: Double

        /// Events per second of wall-clock time.
        public var eventsPerSecond: Double { seconds > 0 ? Double(report.events) / seconds : 0 }

        /// One JSON object: events, events_per_sec, epochs_committed, alarms,
        /// violations, liveness, and some context (`start`: tq or lrtq;
        /// `warnings`: LRTQ deprecation warnings; for an LRTQ start,
        /// `lrtq_secret_readable_as_epoch_1` and `lrtq_nodes_added`; `log`:
        /// where the event log was written, if it was).
        public func json(logPath: String? = nil) -> String {
            var object: [String: Any] = [
                "events": report.events,
                "events_per_sec": (eventsPerSecond * 10).rounded() / 10,
                "epochs_committed": report.epochsCommitted,
                "alarms": report.alarms,
                "violations": report.violations.map { violation -> [String: Any] in
                    [
                        "invariant": violation.invariant.rawValue,
                        "event_index": violation.eventIndex ?? -1,
                        "detail": violation.detail,
                    ]
                },
                "liveness": report.liveness,
                "nodes": options.nodes,
                "seed": options.seed,
                "faults": options.faults.names,
                "messages_sent": report.messagesSent,
                "start": options.startInLrtq ? "lrtq" : "tq",
                "warnings": report.warnings,
                "forgeries": report.forgeries,
                "rejected": report.rejected,
            ]
            if let detail = report.livenessDetail { object["liveness_detail"] = detail }
            if let readable = report.lrtqSecretReadable {
                object["lrtq_secret_readable_as_epoch_1"] = readable
                object["lrtq_nodes_added"] = report.lrtqNodesAdded
            }
            if let logPath { object["log"] = logPath }
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            return String(decoding: data, as: UTF8.self)
        }

        /// The event log as JSON lines.
        public func logText() -> String { EventLog.encode(options: options, events: events) }
    }

    /// Generates, runs and times a simulation.
    public static func run(_ options: SimulationOptions) -> Outcome {
        let clock = ContinuousClock()
        let simulator = Simulator(options: options)
        var report: SimulationReport?
        let elapsed = clock.measure {
            simulator.apply(.rotate)
            while simulator.log.count < options.events && simulator.violations.isEmpty {
                simulator.apply(simulator.nextEvent())
            }
            report = simulator.finish()
        }
        return Outcome(options: options, report: report!, events: simulator.log, seconds: elapsed.seconds)
    }

    /// Replays a logged run.
    public static func replay(logText: String) throws(EventLog.ParseError) -> Outcome {
        let (options, events) = try EventLog.decode(logText)
        let clock = ContinuousClock()
        var result: (SimulationReport, Simulator)?
        let elapsed = clock.measure { result = Simulator.replay(options, events: events) }
        let report = result!.0
        return Outcome(options: options, report: report, events: result!.1.log, seconds: elapsed.seconds)
    }

    /// Messages per reconfiguration for N = 4, 8, 16, 32, as JSON.
    public static func measureMessages() -> String {
        let rows = [4, 8, 16, 32].map { Measurements.messagesPerReconfiguration(nodes: $0) }
        let object: [[String: Any]] = rows.map {
            ["nodes": $0.nodes, "messages_per_reconfiguration": $0.messagesPerReconfiguration]
        }
        let data = try! JSONSerialization.data(withJSONObject: ["messages": object], options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// The time to catch up after 1,000 missed epochs (median of 200), as JSON.
    public static func measureCatchUp(missedEpochs: Int = 1000) -> String {
        guard let catchUp = Measurements.prepareCatchUp(missedEpochs: missedEpochs) else {
            return #"{"error":"could not build the catch-up scenario"}"#
        }
        let clock = ContinuousClock()
        var times: [Double] = []
        var correct = true
        for _ in 0..<200 {
            var secret: RackSecret?
            let elapsed = clock.measure { secret = catchUp.run() }
            correct = correct && secret == catchUp.expectedFirstSecret
            times.append(elapsed.seconds)
        }
        times.sort()
        let object: [String: Any] = [
            "missed_epochs": missedEpochs,
            "median_ms": (times[times.count / 2] * 1e6).rounded() / 1e3,
            "max_ms": (times.last! * 1e6).rounded() / 1e3,
            "correct": correct,
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

extension Duration {
    var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) * 1e-18
    }
}
