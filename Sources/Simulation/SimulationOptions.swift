import KeyrackCore
import SecretSharing
import TrustQuorum

/// The parameters of a run. With the event list, they determine it exactly.
public struct SimulationOptions: Sendable, Equatable, Codable {
    /// The number of initial members, 3…32.
    public var nodes: Int
    /// The seed of both the event generator and the nodes' randomness.
    public var seed: UInt64
    /// How many random events to generate before healing and checking liveness.
    public var events: Int
    /// The faults to inject.
    public var faults: FaultSet
    /// Nodes outside the initial configuration that the operator may add.
    public var spareNodes: Int
    /// Control-plane ticks without progress before a reconfiguration is retried.
    public var stallTicks: Int
    /// Whether every message goes through the wire format (encoded into a
    /// frame and decoded again) on its way, as it would on a real network.
    public var wireEncoding: Bool
    /// Whether the rack starts in the legacy mode (LRTQ), set up by a dealer,
    /// with the upgrade to the trust quorum among the random actions.
    public var startInLrtq: Bool

    /// Options for a run; `nodes` must be 3…32.
    public init(
        nodes: Int,
        seed: UInt64,
        events: Int,
        faults: FaultSet = .all,
        spareNodes: Int = 4,
        stallTicks: Int = 25,
        wireEncoding: Bool = false,
        startInLrtq: Bool = false
    ) {
        self.nodes = nodes
        self.seed = seed
        self.events = events
        self.faults = faults
        self.spareNodes = spareNodes
        self.stallTicks = stallTicks
        self.wireEncoding = wireEncoding
        self.startInLrtq = startInLrtq
    }

    private enum CodingKeys: String, CodingKey {
        case nodes, seed, events, faults, spareNodes, stallTicks, wireEncoding, startInLrtq
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            nodes: try container.decode(Int.self, forKey: .nodes),
            seed: try container.decode(UInt64.self, forKey: .seed),
            events: try container.decode(Int.self, forKey: .events),
            faults: try container.decode(FaultSet.self, forKey: .faults),
            spareNodes: try container.decode(Int.self, forKey: .spareNodes),
            stallTicks: try container.decode(Int.self, forKey: .stallTicks),
            wireEncoding: try container.decodeIfPresent(Bool.self, forKey: .wireEncoding) ?? false,
            startInLrtq: try container.decodeIfPresent(Bool.self, forKey: .startInLrtq) ?? false
        )
    }
}

/// The outcome of a run.
public struct SimulationReport: Sendable, Equatable, Codable {
    /// Events applied, the final healing phase included.
    public var events: Int
    /// Configurations the control plane committed.
    public var epochsCommitted: Int
    /// Alarms raised by nodes.
    public var alarms: Int
    /// Invariant violations (the run stops at the first).
    public var violations: [Violation]
    /// Whether, with faults healed, every member committed the last
    /// configuration, loaded the same secret, and could read older epochs.
    public var liveness: Bool
    /// Why liveness failed, if it did.
    public var livenessDetail: String?
    /// Messages the nodes sent.
    public var messagesSent: Int
    /// Warnings the nodes raised (LRTQ deprecation warnings).
    public var warnings: Int
    /// Nodes added under LRTQ, each with a spare share.
    public var lrtqNodesAdded: Int
    /// For a run started in LRTQ: whether the upgrade committed and every
    /// member of the last configuration read the LRTQ secret as epoch 1.
    /// `nil` for a run that did not start in LRTQ, or stopped early.
    public var lrtqSecretReadable: Bool?
    /// Forged messages the Byzantine node delivered (0 without the fault).
    public var forgeries: Int = 0
    /// Peer messages the nodes refused: shares that failed their digest and
    /// decisions whose operator signature did not verify (summed over the
    /// nodes that are up at the end).
    public var rejected: Int = 0
}
