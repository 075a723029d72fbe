/// What the control plane asks of a node.
public enum ControlPlaneAction: Sendable, Equatable, CustomStringConvertible {
    /// Ask `coordinator` to coordinate this reconfiguration.
    case reconfigure(coordinator: PlatformId, ReconfigureRequest)
    /// Ask `coordinator` to upgrade the rack from LRTQ to the trust quorum.
    case upgradeFromLrtq(coordinator: PlatformId, UpgradeFromLrtqRequest)
    /// Tell a member that prepared the configuration to commit it.
    case commit(PlatformId, Configuration)
    /// Tell a member that did not (or may not have) prepared to commit this configuration.
    case prepareAndCommit(PlatformId, Configuration)

    /// The node the action is for.
    public var target: PlatformId {
        switch self {
        case .reconfigure(let coordinator, _): return coordinator
        case .upgradeFromLrtq(let coordinator, _): return coordinator
        case .commit(let node, _): return node
        case .prepareAndCommit(let node, _): return node
        }
    }

    public var description: String {
        switch self {
        case .reconfigure(let coordinator, let request):
            return "reconfigure(epoch: \(request.epoch), coordinator: \(coordinator), N: \(request.members.count))"
        case .upgradeFromLrtq(let coordinator, let request):
            return
                "upgradeFromLrtq(epoch: \(request.epoch), coordinator: \(coordinator), N: \(request.members.count))"
        case .commit(let node, let config): return "commit(\(config.epoch)) → \(node)"
        case .prepareAndCommit(let node, let config): return "prepareAndCommit(\(config.epoch)) → \(node)"
        }
    }

    /// What the operator signs to carry this action out: the ticket of a
    /// reconfiguration or upgrade, the commit of a configuration.
    public var decision: Decision {
        switch self {
        case .reconfigure(let coordinator, let request):
            return .ticket(ReconfigureTicket(request, coordinator: coordinator))
        case .upgradeFromLrtq(let coordinator, let request):
            return .ticket(ReconfigureTicket(upgrade: request, coordinator: coordinator))
        case .commit(_, let config), .prepareAndCommit(_, let config): return .commit(config)
        }
    }

    /// The action with the operator's signature, as a node takes it.
    public func signed(by signer: some DecisionSigner) throws(SigningError) -> SignedAction {
        let signature = try signer.sign(decision)
        switch self {
        case .reconfigure(let coordinator, let request):
            return .reconfigure(
                SignedTicket(ReconfigureTicket(request, coordinator: coordinator), signature: signature))
        case .upgradeFromLrtq(let coordinator, let request):
            return .upgradeFromLrtq(
                SignedTicket(ReconfigureTicket(upgrade: request, coordinator: coordinator), signature: signature))
        case .commit(let node, let config):
            return .commit(node, config.epoch, signature)
        case .prepareAndCommit(let node, let config):
            return .prepareAndCommit(node, SignedConfiguration(config, signature: signature))
        }
    }
}

/// A ``ControlPlaneAction`` with the operator's signature: what a node is
/// given (``Node/perform(_:using:)``).
public enum SignedAction: Sendable, Equatable {
    /// Coordinate the ticket's reconfiguration.
    case reconfigure(SignedTicket)
    /// Coordinate the ticket's upgrade from LRTQ.
    case upgradeFromLrtq(SignedTicket)
    /// Commit the prepared epoch under this commit signature.
    case commit(PlatformId, Epoch, OperatorSignature)
    /// Commit this signed configuration.
    case prepareAndCommit(PlatformId, SignedConfiguration)
}

/// What became of a ``ControlPlaneAction`` once its node was asked.
public enum ControlPlaneOutcome: Sendable, Equatable {
    /// The node did it.
    case done
    /// The node refused: its error code (a trust-quorum code such as
    /// `TQ-COMMIT-NOT-PREPARED`, or the agent's) and a sentence.
    case refused(code: String, reason: String)
    /// The node could not be asked.
    case unreachable
}

/// Why the control plane refused an operator's request.
public struct ControlPlaneError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// A reconfiguration is still in progress.
        case reconfigurationInProgress = "TQ-CP-BUSY"
        /// N or K is out of range.
        case invalidMembership = "TQ-CP-MEMBERSHIP"
        /// The rack is in LRTQ: it must be upgraded before any reconfiguration.
        case lrtqRequiresUpgrade = "TQ-CP-LRTQ"
        /// An upgrade from LRTQ, but the rack is not in LRTQ (it never was,
        /// or its upgrade committed already).
        case notInLrtq = "TQ-CP-NOT-LRTQ"
        /// No epoch is left within reach of the last commit (``Epoch/maximumAdvance``).
        case epochsExhausted = "TQ-CP-EPOCHS"
    }

    /// What went wrong.
    public let code: Code
    /// A sentence for people.
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// Tunables of the control plane.
public struct ControlPlaneOptions: Sendable, Equatable {
    /// Ticks without progress after which a reconfiguration is aborted and
    /// retried at the next epoch.
    public var stallTicks: Int
    /// The largest N allowed (as for nodes).
    public var maximumMembers: Int
    /// Coordinators that may refuse in a row, between two ticks, before the
    /// control plane waits for the next tick to try again.
    public var refusalsPerTick: Int

    /// Options: abort after `stallTicks` ticks without progress.
    public init(stallTicks: Int = 20, maximumMembers: Int = 32, refusalsPerTick: Int = 3) {
        self.stallTicks = stallTicks
        self.maximumMembers = maximumMembers
        self.refusalsPerTick = refusalsPerTick
    }
}

/// The control plane's role in reconfigurations, as a sans-I/O component.
///
/// It picks a coordinator among the members that committed the last epoch,
/// polls it (``coordinatorReported(_:from:)``), commits once K + Z members
/// acknowledged (``commitQuorum(threshold:memberCount:)``), sending `commit`
/// to those that prepared and `prepareAndCommit` to the rest, and keeps
/// delivering commits to members that were unreachable. Time is a tick the
/// caller supplies: a reconfiguration whose coordinator becomes unavailable
/// or that makes no progress for ``ControlPlaneOptions/stallTicks`` ticks is
/// aborted and retried at the next epoch with another coordinator.
public struct ControlPlane: Sendable {
    /// The rack.
    public let rackId: RackId
    /// Tunables.
    public let options: ControlPlaneOptions
    /// The last configuration the control plane committed.
    public private(set) var lastCommitted: Configuration?
    /// Members of ``lastCommitted`` that confirmed their commit.
    public private(set) var committedMembers: Set<PlatformId> = []
    /// The highest epoch ever handed out.
    public private(set) var highestEpoch = Epoch(0)
    /// How many configurations were committed.
    public private(set) var epochsCommitted = 0
    /// Every committed epoch, in order.
    public private(set) var committedEpochs: [Epoch] = []
    /// Whether the rack is in the legacy mode (LRTQ): true from an LRTQ start
    /// until the upgrade commits, and never again.
    public private(set) var inLrtq: Bool

    private var state: State = .idle
    /// Members of ``lastCommitted`` that acked its prepare (get `commit`, not `prepareAndCommit`).
    private var preparedMembers: Set<PlatformId> = []
    /// Coordinators that refused since the last tick.
    private var refusalsSinceTick = 0

    private enum State: Sendable {
        case idle
        /// Wanted, but no coordinator was available yet.
        case waiting(Target)
        case reconfiguring(Attempt)
    }

    /// What the operator asked for.
    struct Target: Sendable {
        let members: Set<PlatformId>
        let threshold: Int
        /// The upgrade from LRTQ rather than a reconfiguration.
        var upgrade = false
    }

    /// One try at reaching the target, at one epoch with one coordinator.
    struct Attempt: Sendable {
        let target: Target
        let request: ReconfigureRequest
        let coordinator: PlatformId
        var ticksWithoutProgress = 0
        var bestAckCount = 0
    }

    /// A control plane for `rackId` that has committed nothing yet; with
    /// `startingInLrtq`, for a legacy rack that must be upgraded
    /// (``startUpgradeFromLrtq(members:threshold:available:)``) before any
    /// reconfiguration. LRTQ counts as epoch 1, so the upgrade is epoch 2 or later.
    public init(rackId: RackId, options: ControlPlaneOptions = ControlPlaneOptions(), startingInLrtq: Bool = false) {
        self.rackId = rackId
        self.options = options
        self.inLrtq = startingInLrtq
        if startingInLrtq { highestEpoch = .lrtq }
    }

    /// A control plane that picks up where another left off (an operator
    /// command re-run after an interruption), from what the nodes report:
    /// the newest committed configuration, the members known to have
    /// committed it, and the highest epoch any node has seen. Whatever was
    /// under way is abandoned: the next attempt uses a fresh epoch above
    /// `highestEpoch`, and every member not known to have committed gets
    /// `prepareAndCommit`.
    public init(
        rackId: RackId,
        options: ControlPlaneOptions = ControlPlaneOptions(),
        resumingFrom lastCommitted: Configuration?,
        committedMembers: Set<PlatformId>,
        highestEpoch: Epoch
    ) {
        self.init(rackId: rackId, options: options)
        self.lastCommitted = lastCommitted
        if let lastCommitted {
            self.committedMembers = committedMembers.intersection(lastCommitted.members.keys)
            committedEpochs = [lastCommitted.epoch]
        }
        // A reported epoch beyond reach of the last commit is one no node
        // accepts (a peer's forgery, or a poisoned report): starting above
        // it would end the rack's reconfigurations.
        let reported = highestEpoch.isWithinReach(of: lastCommitted?.epoch) ? highestEpoch : Epoch(0)
        self.highestEpoch = max(reported, lastCommitted?.epoch ?? Epoch(0))
    }

    /// The epoch the next attempt would use, if one is left within reach.
    private var nextEpoch: Epoch? {
        highestEpoch.next.flatMap { $0.isWithinReach(of: lastCommitted?.epoch) ? $0 : nil }
    }

    private func requireNextEpoch() throws(ControlPlaneError) {
        guard nextEpoch != nil else {
            throw ControlPlaneError(
                code: .epochsExhausted,
                reason: "no epoch is left within \(Epoch.maximumAdvance) of the last commit (highest \(highestEpoch))")
        }
    }

    /// Z, the safety margin over K: 0 for N ≤ 4, 1 for 5–8, 2 for 9–15, 3 for 16–23, 4 above.
    public static func safetyMargin(memberCount n: Int) -> Int {
        switch n {
        case ...4: return 0
        case 5...8: return 1
        case 9...15: return 2
        case 16...23: return 3
        default: return 4
        }
    }

    /// K + Z acknowledgements (at most N) before the control plane commits.
    public static func commitQuorum(threshold: Int, memberCount: Int) -> Int {
        min(threshold + safetyMargin(memberCount: memberCount), memberCount)
    }

    /// Whether a reconfiguration is wanted or under way.
    public var isReconfiguring: Bool {
        if case .idle = state { return false }
        return true
    }

    /// The reconfiguration under way: its epoch and coordinator.
    public var currentAttempt: (epoch: Epoch, coordinator: PlatformId)? {
        guard case .reconfiguring(let attempt) = state else { return nil }
        return (attempt.request.epoch, attempt.coordinator)
    }

    /// Members of the last committed configuration that have not confirmed their commit.
    public var pendingCommits: Set<PlatformId> {
        guard let lastCommitted else { return [] }
        return Set(lastCommitted.members.keys).subtracting(committedMembers)
    }

    /// The operator asks for a configuration with `members` (and K, by
    /// default N/2 + 1). Returns the request to send, or `nil` if no
    /// coordinator is available yet (the control plane retries on ``tick(available:)``).
    public mutating func startReconfiguration(
        members: Set<PlatformId>,
        threshold: Int? = nil,
        available: Set<PlatformId>
    ) throws(ControlPlaneError) -> ControlPlaneAction? {
        guard !inLrtq else {
            throw ControlPlaneError(code: .lrtqRequiresUpgrade, reason: "the rack is in LRTQ: upgrade it first")
        }
        guard !isReconfiguring else {
            throw ControlPlaneError(code: .reconfigurationInProgress, reason: "a reconfiguration is under way")
        }
        let target = try Self.target(members: members, threshold: threshold, options: options)
        try requireNextEpoch()
        return attempt(target, available: available, excluding: nil)
    }

    /// The operator asks to upgrade the legacy (LRTQ) rack to the trust
    /// quorum with `members` (the LRTQ nodes) and K (by default N/2 + 1).
    /// Returns the request to send, or `nil` if no coordinator is available
    /// yet. Refused once the upgrade committed: nothing is upgraded twice.
    public mutating func startUpgradeFromLrtq(
        members: Set<PlatformId>,
        threshold: Int? = nil,
        available: Set<PlatformId>
    ) throws(ControlPlaneError) -> ControlPlaneAction? {
        guard inLrtq else {
            throw ControlPlaneError(code: .notInLrtq, reason: "the rack is not in LRTQ (or its upgrade committed)")
        }
        guard !isReconfiguring else {
            throw ControlPlaneError(code: .reconfigurationInProgress, reason: "the upgrade is under way")
        }
        var target = try Self.target(members: members, threshold: threshold, options: options)
        try requireNextEpoch()
        target.upgrade = true
        return attempt(target, available: available, excluding: nil)
    }

    private static func target(
        members: Set<PlatformId>,
        threshold: Int?,
        options: ControlPlaneOptions
    ) throws(ControlPlaneError) -> Target {
        let k = threshold ?? ReconfigureRequest.defaultThreshold(memberCount: members.count)
        guard (3...options.maximumMembers).contains(members.count), k >= 2, k < members.count else {
            throw ControlPlaneError(
                code: .invalidMembership,
                reason: "N = \(members.count), K = \(k): need 3 ≤ N ≤ \(options.maximumMembers), 2 ≤ K < N"
            )
        }
        return Target(members: members, threshold: k)
    }

    /// Starts an attempt at the next epoch, or waits if nobody can coordinate.
    private mutating func attempt(
        _ target: Target,
        available: Set<PlatformId>,
        excluding previous: PlatformId?
    ) -> ControlPlaneAction? {
        var eligible = target.members.intersection(available)
        if lastCommitted != nil { eligible.formIntersection(committedMembers) }
        if eligible.count > 1, let previous { eligible.remove(previous) }
        guard !eligible.isEmpty, let epoch = nextEpoch else {
            // (Out of epochs only after 2^32 retries since the last commit.)
            state = .waiting(target)
            return nil
        }
        let sorted = eligible.sorted()
        highestEpoch = epoch
        let coordinator = sorted[Int(epoch.value % UInt64(sorted.count))]
        let request = ReconfigureRequest(
            rackId: rackId,
            epoch: epoch,
            lastCommittedEpoch: lastCommitted?.epoch,
            members: target.members,
            threshold: target.threshold
        )
        state = .reconfiguring(Attempt(target: target, request: request, coordinator: coordinator))
        if target.upgrade {
            let upgrade = UpgradeFromLrtqRequest(
                rackId: rackId,
                epoch: epoch,
                members: target.members,
                threshold: target.threshold
            )
            return .upgradeFromLrtq(coordinator: coordinator, upgrade)
        }
        return .reconfigure(coordinator: coordinator, request)
    }

    /// The coordinator's answer to a poll. Once K + Z members acknowledged,
    /// the configuration is committed and the returned actions deliver it to
    /// the members in `available`.
    public mutating func coordinatorReported(
        _ status: CoordinatorStatus,
        from: PlatformId,
        available: Set<PlatformId>
    ) -> [ControlPlaneAction] {
        guard case .reconfiguring(var attempt) = state, attempt.coordinator == from,
            attempt.request.epoch == status.epoch
        else { return [] }
        let acked = status.acked.intersection(attempt.target.members)
        if acked.count > attempt.bestAckCount {
            attempt.bestAckCount = acked.count
            attempt.ticksWithoutProgress = 0
        }
        guard let config = status.configuration, config.epoch == status.epoch,
            acked.count >= Self.commitQuorum(threshold: config.threshold, memberCount: config.memberCount)
        else {
            state = .reconfiguring(attempt)
            return []
        }
        lastCommitted = config
        inLrtq = false
        committedMembers = []
        preparedMembers = acked
        epochsCommitted += 1
        committedEpochs.append(config.epoch)
        state = .idle
        return commitActions(available: available)
    }

    /// A node confirmed that it committed `epoch`.
    public mutating func commitConfirmed(by node: PlatformId, epoch: Epoch) {
        guard let lastCommitted, lastCommitted.epoch == epoch, lastCommitted.members[node] != nil else { return }
        committedMembers.insert(node)
    }

    /// A node refused `commit`: it gets `prepareAndCommit` next time.
    public mutating func commitRefused(by node: PlatformId) {
        preparedMembers.remove(node)
    }

    /// The coordinator refused the request (it has not acked, or has seen a
    /// newer epoch): retry at the next epoch with another coordinator.
    /// After ``ControlPlaneOptions/refusalsPerTick`` refusals in a row the
    /// control plane waits for the next ``tick(available:)`` to try again.
    public mutating func reconfigurationRefused(by node: PlatformId, available: Set<PlatformId>) -> ControlPlaneAction?
    {
        guard case .reconfiguring(let attempt) = state, attempt.coordinator == node else { return nil }
        refusalsSinceTick += 1
        guard refusalsSinceTick <= options.refusalsPerTick else {
            state = .waiting(attempt.target)
            return nil
        }
        return self.attempt(attempt.target, available: available, excluding: node)
    }

    /// What the outcome of `action` means — the one place that says it, for
    /// the operator and the simulator alike. Returns the next action to carry
    /// out (another coordinator, at the next epoch, after a refusal).
    ///
    /// - A commit carried out is confirmed.
    /// - A `commit` refused as not prepared is sent as `prepareAndCommit`
    ///   next time; any other refusal of a commit changes nothing (it is sent
    ///   again to members that are available, on ``tick(available:)``).
    /// - A coordinator that refuses or cannot be reached is replaced.
    public mutating func record(
        _ action: ControlPlaneAction,
        outcome: ControlPlaneOutcome,
        available: Set<PlatformId>
    ) -> ControlPlaneAction? {
        switch (action, outcome) {
        case (.commit(let node, let config), .done):
            commitConfirmed(by: node, epoch: config.epoch)
        case (.prepareAndCommit(let node, let configuration), .done):
            commitConfirmed(by: node, epoch: configuration.epoch)
        case (.commit(let node, _), .refused(let code, _)) where code == CommitError.Code.notPrepared.rawValue:
            commitRefused(by: node)
        case (.reconfigure(let coordinator, _), .refused), (.reconfigure(let coordinator, _), .unreachable),
            (.upgradeFromLrtq(let coordinator, _), .refused), (.upgradeFromLrtq(let coordinator, _), .unreachable):
            return reconfigurationRefused(by: coordinator, available: available)
        default:
            break
        }
        return nil
    }

    /// Time passes. Aborts a stalled reconfiguration (its coordinator is not
    /// in `available`, or it made no progress for too long) and retries at
    /// the next epoch; retries a waiting one; re-sends commits to members
    /// that have not confirmed and are available.
    public mutating func tick(available: Set<PlatformId>) -> [ControlPlaneAction] {
        refusalsSinceTick = 0
        var actions: [ControlPlaneAction] = []
        switch state {
        case .idle:
            break
        case .waiting(let target):
            if let action = attempt(target, available: available, excluding: nil) { actions.append(action) }
        case .reconfiguring(var attempt):
            attempt.ticksWithoutProgress += 1
            if !available.contains(attempt.coordinator) || attempt.ticksWithoutProgress > options.stallTicks {
                if let action = self.attempt(attempt.target, available: available, excluding: attempt.coordinator) {
                    actions.append(action)
                }
            } else {
                state = .reconfiguring(attempt)
            }
        }
        return commitActions(available: available) + actions
    }

    private func commitActions(available: Set<PlatformId>) -> [ControlPlaneAction] {
        guard let lastCommitted else { return [] }
        return pendingCommits.intersection(available).sorted().map { member in
            preparedMembers.contains(member)
                ? .commit(member, lastCommitted) : .prepareAndCommit(member, lastCommitted)
        }
    }
}
