import TrustQuorum

/// A picture of a run: one lane per node over event time, showing the epoch
/// each node has committed (green when it is up to date with the control
/// plane, amber when it is behind), the epoch it has prepared beyond that,
/// when it is down, expunged, on the far side of a partition, and where
/// alarms and violations happened. ``svg()`` renders it.
public struct Timeline: Sendable {
    /// What a node looks like over an interval of events.
    public struct NodeState: Sendable, Equatable {
        /// Whether the node is running.
        public var up: Bool
        /// Its latest committed epoch.
        public var committed: UInt64?
        /// An epoch it prepared beyond the committed one.
        public var prepared: UInt64?
        /// Whether it knows it was expunged.
        public var expunged: Bool
        /// Whether it is a member of the control plane's last committed configuration.
        public var member: Bool
        /// Whether it committed the control plane's last committed epoch.
        public var caughtUp: Bool
        /// Whether it is on the marked side of a partition.
        public var partitioned: Bool
    }

    /// A node in `state` from event `start` to event `end` (inclusive).
    public struct Segment: Sendable, Equatable {
        /// The first event of the interval.
        public var start: Int
        /// The last event of the interval.
        public var end: Int
        /// The node's state throughout.
        public var state: NodeState
    }

    /// Something that happened at one event.
    public struct Marker: Sendable, Equatable {
        /// What happened.
        public enum Kind: String, Sendable {
            /// The node crashed.
            case crash
            /// The node restarted.
            case restart
            /// The node raised an alarm.
            case alarm
        }

        /// The event index.
        public var event: Int
        /// What happened.
        public var kind: Kind
        /// A description for the tooltip.
        public var detail: String
    }

    /// One node's lane.
    public struct Lane: Sendable {
        /// The node's index (as in the event log).
        public var node: Int
        /// Its platform id, as text.
        public var platformId: String
        /// Its states, in event order, covering every event.
        public var segments: [Segment]
        /// Crashes, restarts and alarms.
        public var markers: [Marker]
    }

    /// One lane per simulated node (members and spares).
    public var lanes: [Lane]
    /// The control plane's last committed epoch over time.
    public var controlPlane: [(start: Int, end: Int, epoch: UInt64?)]
    /// Intervals during which the network was partitioned.
    public var partitions: [(start: Int, end: Int, side: String)]
    /// Invariant violations, at their event.
    public var violations: [(event: Int, detail: String)]
    /// The number of events.
    public var eventCount: Int

    /// Replays `events` under `options` and records the timeline.
    ///
    /// `makeSimulator` builds the simulator to replay on (tests pass a broken
    /// node variant).
    public static func record(
        options: SimulationOptions,
        events: [SimulationEvent],
        makeSimulator: (SimulationOptions) -> Simulator = { Simulator(options: $0) }
    ) -> Timeline {
        let simulator = makeSimulator(options)
        let count = simulator.nodes.count
        var lanes = (0..<count).map {
            Lane(node: $0, platformId: simulator.ids[$0].description, segments: [], markers: [])
        }
        var plane: [(start: Int, end: Int, epoch: UInt64?)] = []
        var partitions: [(start: Int, end: Int, side: String)] = []
        var partitionMask: UInt64?
        var partitionStart = 0
        var alarmsSeen = [Int](repeating: 0, count: count)
        var violations: [(event: Int, detail: String)] = []
        for (index, event) in events.enumerated() {
            let wasUp = simulator.nodes.map(\.up)
            simulator.apply(event)
            switch event {
            case .partition(let mask):
                if let previous = partitionMask {
                    partitions.append((partitionStart, index - 1, Self.side(previous)))
                }
                partitionMask = mask
                partitionStart = index
            case .heal:
                if let previous = partitionMask { partitions.append((partitionStart, index, Self.side(previous))) }
                partitionMask = nil
            default:
                break
            }
            let last = simulator.controlPlane.lastCommitted
            let planeEpoch = last?.epoch.value
            if let tail = plane.last, tail.epoch == planeEpoch {
                plane[plane.count - 1].end = index
            } else {
                plane.append((index, index, planeEpoch))
            }
            for node in 0..<count {
                let sim = simulator.nodes[node]
                let persisted = sim.up ? sim.node.persistentState : sim.persisted
                let committed = persisted.latestCommittedEpoch?.value
                let known = persisted.latestKnownEpoch?.value
                let member = last?.members[simulator.ids[node]] != nil
                let state = NodeState(
                    up: sim.up,
                    committed: committed,
                    prepared: known.flatMap { $0 > (committed ?? 0) ? $0 : nil },
                    expunged: persisted.expunged != nil,
                    member: member,
                    caughtUp: member && committed != nil && committed == planeEpoch,
                    partitioned: partitionMask.map { ($0 >> UInt64(node)) & 1 == 1 } ?? false
                )
                if let tail = lanes[node].segments.last, tail.state == state, tail.end == index - 1 {
                    lanes[node].segments[lanes[node].segments.count - 1].end = index
                } else {
                    lanes[node].segments.append(Segment(start: index, end: index, state: state))
                }
                if wasUp[node] && !sim.up {
                    lanes[node].markers.append(Marker(event: index, kind: .crash, detail: Debugger.describe(event)))
                } else if !wasUp[node] && sim.up {
                    lanes[node].markers.append(Marker(event: index, kind: .restart, detail: Debugger.describe(event)))
                }
                if sim.alarms.count > alarmsSeen[node] {
                    for alarm in sim.alarms[alarmsSeen[node]...] {
                        lanes[node].markers.append(Marker(event: index, kind: .alarm, detail: alarm.description))
                    }
                    alarmsSeen[node] = sim.alarms.count
                }
            }
            while violations.count < simulator.violations.count {
                let violation = simulator.violations[violations.count]
                violations.append((violation.eventIndex ?? index, violation.description))
            }
        }
        if let previous = partitionMask, !events.isEmpty {
            partitions.append((partitionStart, events.count - 1, Self.side(previous)))
        }
        return Timeline(
            lanes: lanes,
            controlPlane: plane,
            partitions: partitions,
            violations: violations,
            eventCount: events.count
        )
    }

    private static func side(_ mask: UInt64) -> String {
        let nodes = (0..<64).filter { (mask >> UInt64($0)) & 1 == 1 }.map { "n\($0)" }
        return nodes.isEmpty ? "no split" : "{\(nodes.joined(separator: " "))} cut off from the rest"
    }
}
