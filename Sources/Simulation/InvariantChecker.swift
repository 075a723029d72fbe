import TrustQuorum

/// The invariants of the trust-quorum specification, checked after every event.
public enum Invariant: String, Sendable, Codable, CaseIterable {
    /// All nodes that know epoch e hold the identical configuration for e.
    case configurationsAgree = "configurations-agree"
    /// A node the coordinator counts as acked has prepared the epoch (or moved past it).
    case ackedNodesPrepared = "acked-nodes-prepared"
    /// A node the control plane counts as committed has committed.
    case committedNodesCommitted = "committed-nodes-committed"
    /// No node coordinates and computes a share at the same time.
    case coordinateXorCompute = "coordinate-xor-compute"
    /// No alarm was raised.
    case noAlarms = "no-alarms"
    /// An expunged node either knows it, or its last committed configuration still lists it.
    case expungedKnowsOrListed = "expunged-knows-or-listed"
    /// An expunged node never holds a share of an epoch it is not a member of.
    case noShareOutsideMembership = "no-share-outside-membership"
    /// Every secret loaded for an epoch, by any node, is the same (epoch 1
    /// included: the LRTQ secret, before and after the upgrade).
    case rackSecretsAgree = "rack-secrets-agree"
    /// A node that committed a trust-quorum configuration holds no LRTQ
    /// state: nothing goes back to LRTQ.
    case neverBackToLrtq = "never-back-to-lrtq"
    /// No honest node loses its share of its latest committed epoch except
    /// by committing a later one, and none records itself removed except on
    /// a configuration the operator committed that leaves it out.
    case sharesKept = "shares-kept"
    /// Every configuration a node committed is one the operator signed.
    case onlySignedCommits = "only-signed-commits"
    /// Every message the nodes send survives the wire format (checked when
    /// ``SimulationOptions/wireEncoding`` is on).
    case wireFormat = "wire-format"
    /// At the end, with faults healed, every member commits the last
    /// configuration and loads the same secret, and older epochs' secrets are readable.
    case liveness = "liveness"
}

/// A broken invariant: which, where in the run, and what was seen.
public struct Violation: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    /// The invariant.
    public let invariant: Invariant
    /// The index of the event after which it was seen (`nil` outside a run).
    public var eventIndex: Int?
    /// What was seen. Never contains secret bytes.
    public let detail: String

    /// A violation of `invariant`.
    public init(_ invariant: Invariant, eventIndex: Int? = nil, detail: String) {
        self.invariant = invariant
        self.eventIndex = eventIndex
        self.detail = detail
    }

    public var description: String {
        let at = eventIndex.map { " after event \($0)" } ?? ""
        return "\(invariant.rawValue)\(at): \(detail)"
    }
}

/// What the checker needs to know about one node.
public struct NodeView: Sendable {
    /// The node.
    public var id: PlatformId
    /// Its persistent state (what is on its disk).
    public var state: PersistentState
    /// What it would report as coordinator.
    public var coordinatorStatus: CoordinatorStatus?
    /// Whether it is coordinating.
    public var isCoordinating: Bool
    /// The epoch whose share it is computing.
    public var computingShareEpoch: Epoch?
    /// Alarms it raised so far.
    public var alarms: [Alarm]

    /// A view from its parts.
    public init(
        id: PlatformId,
        state: PersistentState,
        coordinatorStatus: CoordinatorStatus? = nil,
        isCoordinating: Bool = false,
        computingShareEpoch: Epoch? = nil,
        alarms: [Alarm] = []
    ) {
        self.id = id
        self.state = state
        self.coordinatorStatus = coordinatorStatus
        self.isCoordinating = isCoordinating || coordinatorStatus != nil
        self.computingShareEpoch = computingShareEpoch
        self.alarms = alarms
    }

    /// The view of a live node.
    public init(_ node: Node, alarms: [Alarm] = []) {
        self.init(
            id: node.platformId,
            state: node.persistentState,
            coordinatorStatus: node.coordinatorStatus,
            isCoordinating: node.isCoordinating,
            computingShareEpoch: node.computingShareEpoch,
            alarms: alarms
        )
    }
}

/// What the checker needs to know about the control plane.
public struct ControlPlaneView: Sendable {
    /// The last configuration it committed.
    public var lastCommitted: Configuration?
    /// The members it counts as committed to it.
    public var committedMembers: Set<PlatformId>

    /// A view from its parts.
    public init(lastCommitted: Configuration?, committedMembers: Set<PlatformId>) {
        self.lastCommitted = lastCommitted
        self.committedMembers = committedMembers
    }

    /// The view of a control plane.
    public init(_ controlPlane: ControlPlane) {
        self.init(lastCommitted: controlPlane.lastCommitted, committedMembers: controlPlane.committedMembers)
    }
}

/// Checks the safety invariants over a snapshot of the cluster.
///
/// ``check(nodes:controlPlane:index:)`` is a pure function of its input, so
/// that each invariant can be tested by handing it a state that breaks it.
/// The simulator uses the same code incrementally
/// (``check(nodes:changed:controlPlane:controlPlaneChanged:index:)``): after
/// an event only the nodes the event touched can have changed, and a
/// registry of the first configuration seen for each epoch stands in for the
/// nodes that did not. Nodes that are down are checked with their persisted
/// state (and no volatile state).
public struct InvariantChecker: Sendable {
    /// The first configuration seen for each epoch, and who held it.
    private var configurations: [Epoch: (Configuration, PlatformId)] = [:]

    /// A checker that has seen nothing yet.
    public init() {}

    /// Every violation in `nodes` and `controlPlane`, in invariant order.
    ///
    /// `index` maps each node's id to its position in `nodes`.
    public static func check(
        nodes: [NodeView],
        controlPlane: ControlPlaneView,
        index: [PlatformId: Int]? = nil
    ) -> [Violation] {
        var checker = InvariantChecker()
        return checker.check(
            nodes: nodes,
            changed: Array(nodes.indices),
            controlPlane: controlPlane,
            controlPlaneChanged: true,
            index: index
        )
    }

    /// The violations involving the nodes at `changed` (and the control
    /// plane, if it changed), given that the rest were checked before.
    public mutating func check(
        nodes: [NodeView],
        changed: [Int],
        controlPlane: ControlPlaneView,
        controlPlaneChanged: Bool,
        index: [PlatformId: Int]? = nil
    ) -> [Violation] {
        var violations: [Violation] = []
        let byId =
            index
            ?? Dictionary(
                nodes.enumerated().map { ($0.element.id, $0.offset) }, uniquingKeysWith: { first, _ in first })
        var isChanged = [Bool](repeating: false, count: nodes.count)
        for position in changed { isChanged[position] = true }

        for position in changed {
            let node = nodes[position]
            for epoch in node.state.configurations.keys.sorted() {
                let config = node.state.configurations[epoch]!
                if let (seen, holder) = configurations[epoch] {
                    if seen != config {
                        violations.append(
                            Violation(
                                .configurationsAgree,
                                detail: "\(node.id) and \(holder) hold different configurations for epoch \(epoch)"
                            )
                        )
                    }
                } else {
                    configurations[epoch] = (config, node.id)
                }
            }
        }

        for coordinator in nodes.indices {
            guard let status = nodes[coordinator].coordinatorStatus else { continue }
            let all = isChanged[coordinator]
            // An unchanged coordinator's acks can only be broken by a changed
            // node it counts: look at those alone (no sort, no lookups).
            if !all {
                for position in changed
                where status.acked.contains(nodes[position].id) && !Self.hasPassed(nodes[position].state, status.epoch)
                {
                    violations.append(
                        Violation(
                            .ackedNodesPrepared,
                            detail:
                                "\(nodes[coordinator].id) counts \(nodes[position].id) as acked for epoch \(status.epoch), which it has not prepared"
                        )
                    )
                }
                continue
            }
            for acked in status.acked.sorted() {
                guard let other = byId[acked] else {
                    violations.append(
                        Violation(
                            .ackedNodesPrepared,
                            detail: "\(nodes[coordinator].id) counts unknown node \(acked) as acked"
                        )
                    )
                    continue
                }
                guard all || isChanged[other] else { continue }
                if !Self.hasPassed(nodes[other].state, status.epoch) {
                    violations.append(
                        Violation(
                            .ackedNodesPrepared,
                            detail:
                                "\(nodes[coordinator].id) counts \(acked) as acked for epoch \(status.epoch), which it has not prepared"
                        )
                    )
                }
            }
        }

        if let committed = controlPlane.lastCommitted {
            let members =
                controlPlaneChanged
                ? controlPlane.committedMembers.sorted()
                : changed.map { nodes[$0].id }.filter { controlPlane.committedMembers.contains($0) }
            for member in members {
                let latest = byId[member].flatMap { nodes[$0].state.latestCommittedEpoch }
                if latest == nil || latest! < committed.epoch {
                    violations.append(
                        Violation(
                            .committedNodesCommitted,
                            detail: "control plane counts \(member) as committed to \(committed.epoch); it has not"
                        )
                    )
                }
            }
        }

        for position in changed where nodes[position].isCoordinating && nodes[position].computingShareEpoch != nil {
            violations.append(
                Violation(
                    .coordinateXorCompute, detail: "\(nodes[position].id) coordinates and computes a share at once")
            )
        }

        for position in changed {
            for alarm in nodes[position].alarms {
                violations.append(Violation(.noAlarms, detail: "\(nodes[position].id) raised \(alarm)"))
            }
        }

        for position in changed {
            let node = nodes[position]
            let state = node.state
            // A node that never committed anything is not expunged from anything.
            guard state.expunged == nil, let latest = state.latestCommittedEpoch,
                let config = state.configurations[latest]
            else { continue }
            if config.members[node.id] == nil {
                violations.append(
                    Violation(
                        .expungedKnowsOrListed,
                        detail:
                            "\(node.id)'s last committed configuration (\(latest)) does not list it and it does not know"
                    )
                )
            }
        }

        for position in changed {
            let state = nodes[position].state
            if let committed = state.latestCommittedEpoch, state.lrtq != nil {
                violations.append(
                    Violation(
                        .neverBackToLrtq,
                        detail: "\(nodes[position].id) committed epoch \(committed) and still holds LRTQ state"
                    )
                )
            }
        }

        for position in changed {
            let node = nodes[position]
            for epoch in node.state.shares.keys.sorted()
            where node.state.configurations[epoch]?.members[node.id] == nil {
                violations.append(
                    Violation(
                        .noShareOutsideMembership,
                        detail: "\(node.id) holds a share of epoch \(epoch), whose configuration does not list it"
                    )
                )
            }
        }
        return violations
    }

    /// The trust invariants of one node ("Trust: no single peer's word"):
    /// its latest commit is one the operator signed (`signedCommits`), it
    /// is expunged only by such a commit that leaves it out, and it still
    /// holds the share of its latest committed epoch if it held it `before`
    /// and has not committed since. Returns the violations and what to pass
    /// as `before` next time.
    public static func checkTrust(
        _ node: NodeView, before: (epoch: Epoch, held: Bool)?, signedCommits: [Epoch: Configuration]
    ) -> ([Violation], (epoch: Epoch, held: Bool)?) {
        var violations: [Violation] = []
        let state = node.state
        if let latest = state.latestCommittedEpoch, let config = state.configurations[latest],
            signedCommits[latest] != config
        {
            violations.append(
                Violation(
                    .onlySignedCommits,
                    detail: "\(node.id) committed a configuration of epoch \(latest) the operator did not sign"))
        }
        if let expunged = state.expunged {
            if let signed = signedCommits[expunged.epoch], signed.members[node.id] == nil {
            } else {
                violations.append(
                    Violation(
                        .sharesKept,
                        detail:
                            "\(node.id) recorded itself removed at epoch \(expunged.epoch) without a signed commit leaving it out"
                    ))
            }
        } else if let before, before.held, state.latestCommittedEpoch == before.epoch, state.shares[before.epoch] == nil
        {
            violations.append(
                Violation(
                    .sharesKept, detail: "\(node.id) lost its share of its latest committed epoch \(before.epoch)"))
        }
        let after = state.latestCommittedEpoch.map { (epoch: $0, held: state.shares[$0] != nil) }
        return (violations, after)
    }

    /// Checks a secret `node` loaded for `epoch` against the one loaded
    /// first for that epoch (by any node), if any.
    public static func checkLoadedSecret(
        _ secret: RackSecret,
        epoch: Epoch,
        node: PlatformId,
        firstLoaded: RackSecret?
    ) -> Violation? {
        guard let firstLoaded, firstLoaded != secret else { return nil }
        return Violation(.rackSecretsAgree, detail: "\(node) loaded a different secret for epoch \(epoch)")
    }

    /// Sends `message` through the wire format: the decoded message, or the
    /// violation if it cannot be encoded or does not come back identical.
    public static func checkWireRoundTrip(_ message: Message) -> Result<Message, Violation> {
        let problem: String
        do {
            let frame = try WireFormat.encodeFrame(message)
            if let (decoded, used) = try WireFormat.decodeFrame(frame), used == frame.count, decoded == message {
                return .success(decoded)
            }
            problem = "the decoded message differs"
        } catch {
            problem = error.description
        }
        return .failure(Violation(.wireFormat, detail: "\(message): \(problem)"))
    }

    /// Whether a node prepared `epoch`, or has moved past it (committed or
    /// been expunged at a later epoch, which prunes older shares, or
    /// prepared a later epoch, which replaces an uncommitted prepare: at most
    /// one is kept above the latest commit).
    static func hasPassed(_ state: PersistentState, _ epoch: Epoch) -> Bool {
        if state.hasPrepared(epoch) { return true }
        if let known = state.latestKnownEpoch, known > epoch, state.hasPrepared(known) { return true }
        if let latest = state.latestCommittedEpoch, latest > epoch { return true }
        if let expunged = state.expunged, expunged.epoch > epoch { return true }
        return false
    }
}
