/// What the control plane asks a coordinator to do: move the rack to a new
/// epoch with these members and this threshold. Unchecked; a node turns it
/// into a ``ValidatedReconfigureRequest`` before acting on it.
public struct ReconfigureRequest: Sendable, Equatable, Codable {
    /// The rack.
    public var rackId: RackId
    /// The new epoch.
    public var epoch: Epoch
    /// The epoch the control plane last committed, or `nil` for the initial
    /// setup by a trusted dealer.
    public var lastCommittedEpoch: Epoch?
    /// The members of the new configuration.
    public var members: Set<PlatformId>
    /// K for the new configuration.
    public var threshold: Int

    /// A request from its parts.
    public init(rackId: RackId, epoch: Epoch, lastCommittedEpoch: Epoch?, members: Set<PlatformId>, threshold: Int) {
        self.rackId = rackId
        self.epoch = epoch
        self.lastCommittedEpoch = lastCommittedEpoch
        self.members = members
        self.threshold = threshold
    }

    /// The default threshold for N members: N/2 + 1.
    public static func defaultThreshold(memberCount: Int) -> Int { memberCount / 2 + 1 }
}

/// What the control plane asks a coordinator to do to leave the legacy mode:
/// rebuild the LRTQ secret from K LRTQ shares, put it into the chain as
/// epoch 1, and prepare the first trust-quorum configuration at ``epoch``.
/// Unchecked, like a ``ReconfigureRequest``.
public struct UpgradeFromLrtqRequest: Sendable, Equatable, Codable {
    /// The rack.
    public var rackId: RackId
    /// The epoch of the first trust-quorum configuration, at least 2 (LRTQ counts as epoch 1).
    public var epoch: Epoch
    /// The members: the nodes of the LRTQ rack.
    public var members: Set<PlatformId>
    /// K for the new configuration.
    public var threshold: Int

    /// A request from its parts.
    public init(rackId: RackId, epoch: Epoch, members: Set<PlatformId>, threshold: Int) {
        self.rackId = rackId
        self.epoch = epoch
        self.members = members
        self.threshold = threshold
    }
}

/// Why a reconfiguration request was refused.
public struct ReconfigureError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable, CaseIterable {
        /// The request is for another rack.
        case rackIdMismatch = "TQ-RECONF-RACK-ID"
        /// The new epoch is not greater than every epoch this node has seen.
        case epochNotNewer = "TQ-RECONF-EPOCH"
        /// The epoch is more than ``Epoch/maximumAdvance`` above the latest commit.
        case epochOutOfReach = "TQ-RECONF-EPOCH-REACH"
        /// The request's last committed epoch is not this node's.
        case lastCommittedEpochMismatch = "TQ-RECONF-LAST-COMMITTED"
        /// N is outside 3…maximum (32 by default, at most 255).
        case memberCountOutOfRange = "TQ-RECONF-MEMBER-COUNT"
        /// K is outside 2 ≤ K < N.
        case thresholdOutOfRange = "TQ-RECONF-THRESHOLD"
        /// This node, the coordinator, is not a member of the new configuration.
        case coordinatorNotMember = "TQ-RECONF-COORDINATOR-NOT-MEMBER"
        /// This node does not hold its share of the last committed epoch, so
        /// it did not acknowledge it and cannot coordinate.
        case coordinatorHasNotAcked = "TQ-RECONF-NOT-ACKED"
        /// This node was expunged.
        case expunged = "TQ-RECONF-EXPUNGED"
        /// A platform id in the request is empty or longer than 255 bytes.
        case invalidPlatformId = "TQ-RECONF-PLATFORM-ID"
        /// An upgrade from LRTQ, but this node holds no LRTQ state.
        case notInLrtq = "TQ-RECONF-NOT-LRTQ"
        /// An upgrade from LRTQ, but this node already committed a
        /// trust-quorum configuration: nothing goes back to LRTQ, and nothing
        /// is upgraded twice.
        case alreadyUpgraded = "TQ-RECONF-ALREADY-UPGRADED"
        /// The ticket's signature does not verify under the pinned operator CA.
        case unsigned = "TQ-RECONF-UNSIGNED"
        /// The ticket names another coordinator, or is of the other kind
        /// (a reconfiguration ticket for an upgrade, or the reverse).
        case wrongTicket = "TQ-RECONF-TICKET"
    }

    /// The rule that was broken.
    public let code: Code
    /// A sentence for people.
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// A reconfiguration request that passed every check against the node that
/// will coordinate it. Code past this point never re-checks.
public struct ValidatedReconfigureRequest: Sendable, Equatable {
    /// The rack.
    public let rackId: RackId
    /// The new epoch, greater than every epoch the coordinator has seen.
    public let epoch: Epoch
    /// The last committed configuration, whose shares the coordinator
    /// collects, or `nil` for the initial setup.
    public let lastCommitted: Configuration?
    /// The new members, 3 ≤ N ≤ maximum, including the coordinator.
    public let members: Set<PlatformId>
    /// 2 ≤ K < N.
    public let threshold: Int
    /// The coordinator (the validating node).
    public let coordinator: PlatformId

    /// Checks `request` against the state of the node `coordinator`.
    ///
    /// - Parameters:
    ///   - request: what the control plane asked.
    ///   - coordinator: the platform id of the node that will coordinate.
    ///   - rackId: that node's rack.
    ///   - state: that node's persistent state.
    ///   - highestEpochSeen: the highest epoch that node has seen anywhere,
    ///     including reconfigurations it coordinated but never persisted.
    ///   - maximumMembers: the largest N allowed (32 by default, ≤ 255).
    public init(
        _ request: ReconfigureRequest,
        coordinator: PlatformId,
        rackId: RackId,
        state: PersistentState,
        highestEpochSeen: Epoch?,
        maximumMembers: Int = 32
    ) throws(ReconfigureError) {
        guard state.expunged == nil else { throw ReconfigureError(code: .expunged, reason: "this node was expunged") }
        try Self.checkCommon(
            rackId: request.rackId,
            epoch: request.epoch,
            members: request.members,
            threshold: request.threshold,
            coordinator: coordinator,
            ownRackId: rackId,
            highestEpochSeen: highestEpochSeen,
            latestCommitted: state.latestCommittedEpoch,
            maximumMembers: maximumMembers
        )
        let lastCommitted: Configuration?
        switch (request.lastCommittedEpoch, state.latestCommittedEpoch) {
        case (nil, nil):
            guard state.lrtq == nil else {
                throw ReconfigureError(
                    code: .lastCommittedEpochMismatch,
                    reason: "this node is in LRTQ: it leaves it with upgradeFromLrtq, never with a fresh setup"
                )
            }
            lastCommitted = nil
        case (nil, .some(let mine)):
            throw ReconfigureError(
                code: .lastCommittedEpochMismatch,
                reason: "request has no last committed epoch but this node committed \(mine)"
            )
        case (.some(let theirs), let mine):
            if let mine, theirs < mine {
                throw ReconfigureError(
                    code: .lastCommittedEpochMismatch,
                    reason: "request's last committed epoch \(theirs) is older than this node's \(mine)"
                )
            }
            guard request.epoch > theirs else {
                throw ReconfigureError(
                    code: .epochNotNewer,
                    reason: "epoch \(request.epoch) is not greater than the last committed \(theirs)"
                )
            }
            // The node must have committed that epoch (under the operator's
            // signature) and hold its share. A ticket is not a commit: a
            // node whose commit has not arrived is not a coordinator.
            guard let config = state.configurations[theirs], state.shares[theirs] != nil,
                state.committedEpochs.contains(theirs)
            else {
                throw ReconfigureError(
                    code: .coordinatorHasNotAcked,
                    reason: "this node has not committed, or holds no share of, the last committed epoch \(theirs)"
                )
            }
            lastCommitted = config
        }
        self.rackId = rackId
        self.epoch = request.epoch
        self.lastCommitted = lastCommitted
        self.members = request.members
        self.threshold = request.threshold
        self.coordinator = coordinator
    }

    /// Checks an upgrade from LRTQ against the state of the node `coordinator`:
    /// the node is in LRTQ and has committed no trust-quorum configuration,
    /// and the epoch is at least 2 and greater than every epoch seen. The
    /// result has no ``lastCommitted``: the coordinator collects LRTQ shares.
    public init(
        upgrade request: UpgradeFromLrtqRequest,
        coordinator: PlatformId,
        rackId: RackId,
        state: PersistentState,
        highestEpochSeen: Epoch?,
        maximumMembers: Int = 32
    ) throws(ReconfigureError) {
        guard state.expunged == nil else { throw ReconfigureError(code: .expunged, reason: "this node was expunged") }
        if let committed = state.latestCommittedEpoch {
            throw ReconfigureError(
                code: .alreadyUpgraded,
                reason: "this node committed trust-quorum epoch \(committed); LRTQ is gone"
            )
        }
        guard state.lrtq != nil else {
            throw ReconfigureError(code: .notInLrtq, reason: "this node holds no LRTQ state")
        }
        try Self.checkCommon(
            rackId: request.rackId,
            epoch: request.epoch,
            members: request.members,
            threshold: request.threshold,
            coordinator: coordinator,
            ownRackId: rackId,
            highestEpochSeen: max(highestEpochSeen ?? Epoch.lrtq, Epoch.lrtq),
            latestCommitted: .lrtq,
            maximumMembers: maximumMembers
        )
        self.rackId = rackId
        self.epoch = request.epoch
        self.lastCommitted = nil
        self.members = request.members
        self.threshold = request.threshold
        self.coordinator = coordinator
    }

    private static func checkCommon(
        rackId: RackId,
        epoch: Epoch,
        members: Set<PlatformId>,
        threshold: Int,
        coordinator: PlatformId,
        ownRackId: RackId,
        highestEpochSeen: Epoch?,
        latestCommitted: Epoch?,
        maximumMembers: Int
    ) throws(ReconfigureError) {
        guard rackId == ownRackId else {
            throw ReconfigureError(code: .rackIdMismatch, reason: "request for rack \(rackId)")
        }
        let count = members.count
        guard (3...min(maximumMembers, 255)).contains(count) else {
            throw ReconfigureError(
                code: .memberCountOutOfRange,
                reason: "\(count) members; allowed 3…\(min(maximumMembers, 255))"
            )
        }
        guard members.allSatisfy(Configuration.isValid) else {
            throw ReconfigureError(code: .invalidPlatformId, reason: "a platform id field is empty or too long")
        }
        guard threshold >= 2, threshold < count else {
            throw ReconfigureError(
                code: .thresholdOutOfRange,
                reason: "threshold \(threshold) with \(count) members; need 2 ≤ K < N"
            )
        }
        guard members.contains(coordinator) else {
            throw ReconfigureError(code: .coordinatorNotMember, reason: "\(coordinator) is not in the new members")
        }
        if let seen = highestEpochSeen, epoch <= seen {
            throw ReconfigureError(
                code: .epochNotNewer,
                reason: "epoch \(epoch) is not greater than \(seen), already seen"
            )
        }
        guard epoch.isWithinReach(of: latestCommitted) else {
            throw ReconfigureError(
                code: .epochOutOfReach,
                reason:
                    "epoch \(epoch) is more than \(Epoch.maximumAdvance) above the latest commit (\(latestCommitted ?? Epoch(0)))"
            )
        }
    }
}
