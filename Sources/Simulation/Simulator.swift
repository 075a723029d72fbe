import KeyrackCore
import SecretSharing
import TrustQuorum

/// A deterministic simulation of a rack: nodes, the control plane, a
/// network with one FIFO queue per directed link, faults and an operator.
///
/// Every step is a ``SimulationEvent`` drawn from a generator seeded by
/// ``SimulationOptions/seed``; the nodes' own randomness comes from a
/// separate stream of the same seed, so replaying the event list reproduces
/// the run exactly. The invariants are checked after every event.
public final class Simulator {
    /// The parameters.
    public let options: SimulationOptions
    /// Every event applied so far.
    /// The nodes that are up, as the control plane sees them.
    var available: Set<PlatformId> = []
    public internal(set) var log: [SimulationEvent] = []
    /// The first violation seen, if any.
    public internal(set) var violations: [Violation] = []
    /// The control plane.
    public internal(set) var controlPlane: ControlPlane
    /// Messages sent by nodes so far.
    public internal(set) var messagesSent = 0
    /// Alarms raised so far.
    public internal(set) var alarmCount = 0
    /// Warnings raised so far (LRTQ deprecation warnings, one per use).
    public internal(set) var warningCount = 0
    /// Nodes added under LRTQ (each handed a spare share) so far.
    public internal(set) var lrtqNodesAdded = 0

    let rackId: RackId
    let ids: [PlatformId]
    let indexOf: [PlatformId: Int]
    var nodes: [SimNode]
    var queues: [LinkQueue]
    var activeLinks: [Int] = []
    var activePosition: [Int]
    var linkUp: [Bool]
    var partitionMask: UInt64?
    var protocolRandom: SeededRandomSource
    var eventRandom: SplitMix64
    /// The operator's key: it signs every ticket and commit the control plane decides.
    let operatorKey: RawOperatorKey
    /// What every node pins: the operator's key.
    let operatorVerifier: any DecisionVerifier
    /// The Byzantine node's own key, pinned by nobody: what it signs its forgeries with.
    let forgerKey: RawOperatorKey
    /// Genuine signed messages seen on the links, for the Byzantine node's replays.
    var captured: [Message] = []
    /// Forged messages delivered so far.
    public internal(set) var forgeries = 0
    /// Every configuration the operator signed a commit of, by epoch.
    var signedCommits: [Epoch: Configuration] = [:]
    /// Per node: its latest committed epoch and whether it held that epoch's share, after the last check.
    var heldShares: [Int: (epoch: Epoch, held: Bool)] = [:]
    var loadedSecrets: [Epoch: RackSecret] = [:]
    var loadedBy: [Int: Epoch] = [:]
    var lastLoad: RackSecret?
    var targetMembers: Set<Int>
    var checker = InvariantChecker()
    var views: [NodeView] = []
    var dirty: [Bool] = []
    var dirtyList: [Int] = []
    var controlPlaneChanged = true
    var retired: Set<Int> = []
    /// The LRTQ secret, kept from the dealer's setup to check the upgrade.
    var lrtqSecret: RackSecret?
    var lrtqSecretReadable: Bool?
    /// A deliberately broken node variant, for tests of the checks and the
    /// debugger only: sees each node's output before the simulator carries
    /// it out, and may change it. `nil` in every real run.
    public var outputTamper: (@Sendable (_ node: Int, _ output: inout NodeOutput) -> Void)?

    struct SimNode {
        var node: Node
        var persisted: PersistentState
        var up = true
        var downUntilEpoch: Epoch?
        var alarms: [Alarm] = []
    }

    struct LinkQueue {
        var items: [Message] = []
        var head = 0
        var isEmpty: Bool { head == items.count }
        var count: Int { items.count - head }

        mutating func push(_ message: Message) { items.append(message) }

        mutating func pop() -> Message? {
            guard head < items.count else { return nil }
            let message = items[head]
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            }
            return message
        }

        func peek() -> Message? { head < items.count ? items[head] : nil }

        mutating func clear() {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    /// A simulator with `options.nodes` members-to-be and the spare nodes, all up.
    public convenience init(options: SimulationOptions) {
        self.init(options: options, trustingAnySignature: false)
    }

    /// A simulator; with `trustingAnySignature`, a deliberately weakened
    /// rack whose nodes accept any signature (for the tests that show the
    /// trust invariants catch what the signatures prevent).
    init(options: SimulationOptions, trustingAnySignature: Bool) {
        precondition((3...32).contains(options.nodes), "nodes must be 3…32")
        self.options = options
        var setupRandom = SeededRandomSource(seed: options.seed ^ 0x7271_7261_636B_2D69)
        rackId = RackId.random(using: &setupRandom)
        let key = RawOperatorKey(using: &setupRandom)
        operatorKey = key
        operatorVerifier = trustingAnySignature ? AnySignature() : key.verifier
        let verifier: any DecisionVerifier = trustingAnySignature ? AnySignature() : key.verifier
        var forgerRandom = SeededRandomSource(seed: options.seed ^ 0x4259_5A41_4E54_494E)
        forgerKey = RawOperatorKey(using: &forgerRandom)
        protocolRandom = SeededRandomSource(seed: options.seed ^ 0x5452_5553_5451_5552)
        eventRandom = SplitMix64(seed: options.seed)
        let count = min(options.nodes + max(0, options.spareNodes), 64)
        ids = (0..<count).map { PlatformId(part: "913-0000019", serial: "BRM42" + String(100 + $0)) }
        var indexOf: [PlatformId: Int] = [:]
        for (index, id) in ids.enumerated() { indexOf[id] = index }
        self.indexOf = indexOf
        let rack = rackId
        var legacy: [PlatformId: LrtqState] = [:]
        if options.startInLrtq {
            // 3…32 initial members: within LRTQ's limits.
            let setup = try! Lrtq.setUp(rackId: rackId, members: Set(ids.prefix(options.nodes)), using: &setupRandom)
            legacy = setup.states
            lrtqSecret = setup.secret
        }
        nodes = ids.map { id in
            let state = legacy[id].map {
                PersistentState(lrtq: $0, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
            }
            return SimNode(
                node: Node(
                    platformId: id, rackId: rack, persistentState: state ?? .empty, operatorVerifier: verifier),
                persisted: state ?? .empty
            )
        }
        queues = Array(repeating: LinkQueue(), count: count * count)
        activePosition = Array(repeating: -1, count: count * count)
        linkUp = Array(repeating: false, count: count * count)
        controlPlane = ControlPlane(
            rackId: rackId,
            options: ControlPlaneOptions(stallTicks: options.stallTicks, maximumMembers: 32),
            startingInLrtq: options.startInLrtq
        )
        targetMembers = Set(0..<options.nodes)
        available = Set(ids)
        dirty = Array(repeating: false, count: count)
        views = ids.map { NodeView(id: $0, state: .empty) }
        for index in 0..<count { markDirty(index) }
        updateConnectivity()
    }

    var firstActiveLink: Int? { activeLinks.first }

    // MARK: - Running

    /// Generates and applies `options.events` events, then heals and checks
    /// liveness. Stops at the first violation.
    public static func run(_ options: SimulationOptions) -> SimulationReport {
        let simulator = Simulator(options: options)
        simulator.apply(.rotate)
        while simulator.log.count < options.events && simulator.violations.isEmpty {
            simulator.apply(simulator.nextEvent())
        }
        return simulator.finish()
    }

    /// Applies a recorded event list (from ``log``) to a fresh simulator and
    /// reports as a run would, without generating or healing anything;
    /// liveness is whether the final state is settled.
    public static func replay(_ options: SimulationOptions, events: [SimulationEvent]) -> (
        SimulationReport, Simulator
    ) {
        let simulator = Simulator(options: options)
        for event in events where simulator.violations.isEmpty { simulator.apply(event) }
        // The logged run ends with its healing phase: check that the state it
        // reached is settled (every member committed and loaded the last epoch).
        let problem = simulator.violations.isEmpty ? simulator.unsettled() : "stopped at a violation"
        return (simulator.report(liveness: problem == nil, detail: problem), simulator)
    }

    func report(liveness: Bool, detail: String?) -> SimulationReport {
        SimulationReport(
            events: log.count,
            epochsCommitted: controlPlane.epochsCommitted,
            alarms: alarmCount,
            violations: violations,
            liveness: liveness,
            livenessDetail: detail,
            messagesSent: messagesSent,
            warnings: warningCount,
            lrtqNodesAdded: lrtqNodesAdded,
            lrtqSecretReadable: lrtqSecretReadable,
            forgeries: forgeries,
            rejected: nodes.reduce(0) { $0 + $1.node.rejectedShares + $1.node.rejectedMessages }
        )
    }

    /// A digest of the cluster's persistent states and loaded secrets, to
    /// compare a run with its replay.
    public var stateSummary: String {
        var parts: [String] = []
        for (index, node) in nodes.enumerated() {
            let state = node.persisted
            let epochs = state.configurations.keys.sorted().map(\.description).joined(separator: ",")
            let fingerprints = state.configurations.keys.sorted()
                .map { state.configurations[$0]!.fingerprint.hexString.prefix(8) }.joined(separator: ",")
            parts.append(
                "\(index):c=\(state.latestCommittedEpoch?.description ?? "-"):e=\(epochs):f=\(fingerprints):x=\(state.expunged != nil)"
            )
        }
        parts.append("cp=\(controlPlane.lastCommitted?.epoch.description ?? "-"):\(controlPlane.epochsCommitted)")
        parts.append("sent=\(messagesSent)")
        return parts.joined(separator: ";")
    }
}
