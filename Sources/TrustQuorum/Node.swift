import KeyrackCore
import SecretSharing

/// One trust-quorum node as a sans-I/O state machine.
///
/// Feed it inputs — an operator request, a control-plane decision, a peer
/// connecting or a message arriving — and drain what it wants done with
/// ``drainOutput()``: messages to send, whether to persist
/// ``persistentState`` first, alarms. It never reads a clock, never touches
/// the network or the disk, and draws randomness only from the source passed
/// to ``reconfigure(_:using:)``, so the same code runs under the real
/// transport and under the simulator, reproducibly.
///
/// A node is in one of three states: idle, coordinating a reconfiguration,
/// or computing its share of a configuration it committed without having
/// prepared it. It can independently be gathering shares to load the rack
/// secret. Retries happen by resending when a peer connects.
public struct Node: Sendable {
    /// This node's platform id.
    public let platformId: PlatformId
    /// This node's rack.
    public let rackId: RackId
    /// Tunables.
    public let options: NodeOptions
    /// What must survive a restart. Persist it whenever an output says so.
    public internal(set) var persistentState: PersistentState
    /// Shares from peers that did not match the digest in the configuration,
    /// or came from a non-member, and were ignored.
    public internal(set) var rejectedShares = 0
    /// Messages refused for what they ask, not for a bad share: a `Prepare`
    /// or `CommitAdvance` beyond reach of the latest commit
    /// (``Epoch/maximumAdvance``).
    public internal(set) var rejectedMessages = 0

    var state: State = .idle
    var connectedPeers: Set<PlatformId> = []
    var loader: RackSecretLoader?
    var lrtqLoader: LrtqShareCollector?
    var secretCache: [Epoch: RackSecret] = [:]
    var chainOpenedAt: Epoch?
    /// The highest epoch this node has seen in a request, a `Prepare` or a
    /// configuration (an operator resuming a reconfiguration starts above it).
    public internal(set) var highestEpochSeen: Epoch?
    var output = NodeOutput()

    enum State: Sendable {
        case idle
        case coordinating(Coordinator)
        case computingShare(ShareComputation)
    }

    /// A node starting (or restarting) from its persisted state.
    ///
    /// If the state shows a committed configuration without this node's share
    /// (it committed without preparing and crashed before computing it), the
    /// node resumes computing it as peers connect.
    public init(
        platformId: PlatformId,
        rackId: RackId,
        persistentState: PersistentState = .empty,
        options: NodeOptions = NodeOptions()
    ) {
        self.platformId = platformId
        self.rackId = rackId
        self.options = options
        self.persistentState = persistentState
        highestEpochSeen = persistentState.latestKnownEpoch
        if persistentState.expunged == nil, persistentState.lrtq != nil {
            output.warnings.append(.lrtqDeprecated(.started))
        }
        guard persistentState.expunged == nil, let latest = persistentState.latestCommittedEpoch else { return }
        guard let config = persistentState.configurations[latest] else {
            output.alarms.append(.committedConfigurationLost(epoch: latest))
            return
        }
        if persistentState.shares[latest] == nil {
            state = .computingShare(ShareComputation(configuration: config, platformId: platformId))
        }
    }

    // MARK: - Observing

    /// What the coordinator reports to the control plane, or `nil` when this
    /// node is not coordinating.
    public var coordinatorStatus: CoordinatorStatus? {
        guard case .coordinating(let coordinator) = state else { return nil }
        switch coordinator.phase {
        case .collectingShares, .collectingLrtqShares:
            return CoordinatorStatus(epoch: coordinator.request.epoch, configuration: nil, acked: [])
        case .preparing(let preparing):
            return CoordinatorStatus(
                epoch: coordinator.request.epoch,
                configuration: preparing.configuration,
                acked: preparing.acked
            )
        }
    }

    /// Whether this node is coordinating a reconfiguration.
    public var isCoordinating: Bool {
        if case .coordinating = state { return true }
        return false
    }

    /// Whether this node is in the legacy mode (LRTQ): it holds LRTQ state
    /// and has committed no trust-quorum configuration yet.
    public var isInLrtq: Bool { persistentState.expunged == nil && persistentState.lrtq != nil }

    /// The epoch whose share this node is computing, if any.
    public var computingShareEpoch: Epoch? {
        if case .computingShare(let computation) = state { return computation.epoch }
        return nil
    }

    /// Takes the output gathered since the last call.
    public mutating func drainOutput() -> NodeOutput {
        defer { output = NodeOutput() }
        return output
    }

    // MARK: - Inputs from the control plane

    /// Starts coordinating a reconfiguration (or the initial setup, as the
    /// trusted dealer, when `request.lastCommittedEpoch` is `nil`).
    ///
    /// The new secret, its shares and the chain's salt are drawn here, from
    /// `random`; nothing else in the node draws randomness.
    public mutating func reconfigure(
        _ request: ReconfigureRequest,
        using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        let validated = try ValidatedReconfigureRequest(
            request,
            coordinator: platformId,
            rackId: rackId,
            state: persistentState,
            highestEpochSeen: highestEpochSeen,
            maximumMembers: options.maximumMembers
        )
        highestEpochSeen = validated.epoch
        if let last = validated.lastCommitted, !persistentState.committedEpochs.contains(last.epoch) {
            // The control plane committed it; our commit message is late.
            commit(configuration: last)
        }
        let (secret, newShares) = Self.drawShares(validated, using: &random)

        guard let last = validated.lastCommitted else {
            prepare(validated, shares: newShares, chain: nil)
            return
        }
        let salt = random.bytes(EncryptedRackSecrets.saltByteCount)
        var collector = ShareCollector(configuration: last)
        collector.shares[platformId] = persistentState.shares[last.epoch]!
        let coordinator = Coordinator(
            request: validated,
            phase: .collectingShares(
                CollectingShares(collector: collector, newSecret: secret, salt: salt, newShares: newShares)
            )
        )
        state = .coordinating(coordinator)
        ask(last.sortedMembers, coordinator.request(for:))
    }

    /// Starts coordinating the upgrade of this legacy (LRTQ) rack to the trust
    /// quorum: collects K LRTQ shares with `GetLrtqShare` (rejecting unknown
    /// digests and duplicates), rebuilds the LRTQ secret, puts it into the
    /// chain as epoch 1 and prepares the configuration of `request.epoch`
    /// (at least 2) like any reconfiguration.
    ///
    /// Refused with ``ReconfigureError/Code/alreadyUpgraded`` once this node
    /// committed a trust-quorum configuration, and with
    /// ``ReconfigureError/Code/notInLrtq`` on a node without LRTQ state.
    public mutating func upgradeFromLrtq(
        _ request: UpgradeFromLrtqRequest,
        using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        let validated = try ValidatedReconfigureRequest(
            upgrade: request,
            coordinator: platformId,
            rackId: rackId,
            state: persistentState,
            highestEpochSeen: highestEpochSeen,
            maximumMembers: options.maximumMembers
        )
        // Validated: the node is in LRTQ.
        let lrtq = persistentState.lrtq!
        highestEpochSeen = validated.epoch
        output.warnings.append(.lrtqDeprecated(.upgrading))
        let (secret, newShares) = Self.drawShares(validated, using: &random)
        let salt = random.bytes(EncryptedRackSecrets.saltByteCount)
        var collector = LrtqShareCollector(threshold: lrtq.threshold)
        _ = collector.add(lrtq.share, from: platformId, lrtq: lrtq)
        let coordinator = Coordinator(
            request: validated,
            phase: .collectingLrtqShares(
                CollectingLrtqShares(collector: collector, newSecret: secret, salt: salt, newShares: newShares)
            )
        )
        state = .coordinating(coordinator)
        ask(validated.members.sorted(), coordinator.request(for:))
    }

    /// Hands one of this node's spare LRTQ shares to a node being added
    /// under LRTQ: returns the state the new node starts with (its share,
    /// the threshold and the 255 digests, no spare shares), or `nil` while
    /// this node is still gathering LRTQ shares to rebuild the secret that
    /// decrypts its spares (poll again after more input).
    ///
    /// The spare share is removed from this node's state before it is
    /// returned (persist before handing it over), so it is never given twice.
    public mutating func handOutLrtqSpareShare() throws(LrtqError) -> LrtqState? {
        guard persistentState.expunged == nil, var lrtq = persistentState.lrtq else {
            throw LrtqError(code: .notInLrtq, reason: "this node holds no LRTQ state")
        }
        guard let encrypted = lrtq.spareShares.first else {
            throw LrtqError(code: .noSpareShare, reason: "this node has handed out all its spare shares")
        }
        guard let secret = lrtqSecret(lrtq) else { return nil }
        guard let share = Lrtq.open(encrypted, secret: secret, rackId: rackId), lrtq.isKnown(share) else {
            output.alarms.append(.rackSecretDecryptionFailed(epoch: .lrtq))
            throw LrtqError(code: .spareShareInvalid, reason: "spare share \(encrypted.x) did not open or is unknown")
        }
        lrtq.spareShares.removeFirst()
        persistentState.lrtq = lrtq
        output.persistentStateChanged = true
        output.warnings.append(.lrtqDeprecated(.handedOutSpareShare))
        return LrtqState(shareDigests: lrtq.shareDigests, threshold: lrtq.threshold, share: share, spareShares: [])
    }

    /// Commits `epoch`, which this node prepared. Committing an epoch at or
    /// below the latest committed one does nothing.
    public mutating func commit(_ epoch: Epoch) throws(CommitError) {
        guard persistentState.expunged == nil else { throw CommitError(code: .expunged, epoch: epoch) }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        guard let config = persistentState.configurations[epoch], persistentState.shares[epoch] != nil else {
            throw CommitError(code: .notPrepared, epoch: epoch)
        }
        commit(configuration: config)
    }

    /// Commits `configuration`, which this node may never have seen (it was
    /// down during the prepare): it then computes its share from K others.
    public mutating func prepareAndCommit(_ configuration: Configuration) throws(CommitError) {
        let epoch = configuration.epoch
        guard persistentState.expunged == nil else { throw CommitError(code: .expunged, epoch: epoch) }
        guard configuration.rackId == rackId else { throw CommitError(code: .rackIdMismatch, epoch: epoch) }
        guard configuration.members[platformId] != nil else { throw CommitError(code: .notMember, epoch: epoch) }
        if let existing = persistentState.configurations[epoch], existing != configuration {
            output.alarms.append(.mismatchedConfigurations(epoch: epoch, from: configuration.coordinator))
            throw CommitError(code: .mismatchedConfiguration, epoch: epoch)
        }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        commit(configuration: configuration)
    }

    /// Sends each of `peers` that is connected (never this node itself), in
    /// order, what `request` asks of it.
    mutating func ask(_ peers: [PlatformId], _ request: (PlatformId) -> Message.Kind?) {
        for peer in peers where peer != platformId && connectedPeers.contains(peer) {
            if let kind = request(peer) { send(kind, to: peer) }
        }
    }

    mutating func send(_ kind: Message.Kind, to peer: PlatformId) {
        output.messages.append(OutgoingMessage(to: peer, message: Message(rackId: rackId, kind: kind)))
    }
}
