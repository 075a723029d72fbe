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
///
/// No single peer's word changes what it holds: it coordinates only a ticket
/// the operator signed, prepares only under such a ticket from the ticket's
/// coordinator, commits only a configuration whose commit signature verifies
/// under ``operatorVerifier``, and records itself removed only on a signed
/// configuration that leaves it out.
public struct Node: Sendable {
    /// This node's platform id.
    public let platformId: PlatformId
    /// This node's rack.
    public let rackId: RackId
    /// Tunables.
    public let options: NodeOptions
    /// Judges the operator's signatures on tickets and commits.
    public let operatorVerifier: any DecisionVerifier
    /// What must survive a restart. Persist it whenever an output says so.
    public internal(set) var persistentState: PersistentState
    /// Shares from peers that did not match the digest in the configuration,
    /// or came from a non-member, and were ignored.
    public internal(set) var rejectedShares = 0
    /// Messages refused for what they ask, not for a bad share: a `Prepare`,
    /// `CommitAdvance` or `Expunged` whose operator signature does not
    /// verify or does not match, or beyond reach of the latest commit
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
        options: NodeOptions = NodeOptions(),
        operatorVerifier: any DecisionVerifier
    ) {
        self.platformId = platformId
        self.rackId = rackId
        self.options = options
        self.operatorVerifier = operatorVerifier
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

    /// The peers that may open a channel to this node, or `nil` before its
    /// first commit (a new node, or one in LRTQ), when the caller's address
    /// book decides. After a commit: the members of the latest committed
    /// configuration and of the configuration it prepared, or coordinates,
    /// under a signed ticket above it. Nobody once expunged. (Rule
    /// "Admission is membership" in trust-quorum.md.)
    public var admittedPeers: Set<PlatformId>? {
        guard persistentState.expunged == nil else { return [] }
        guard let latest = persistentState.latestCommittedConfiguration else { return nil }
        return provisionalPeers.union(latest.members.keys).subtracting([platformId])
    }

    /// Peers admitted before the first commit in addition to the caller's
    /// address book: the members of a configuration prepared, or
    /// coordinated, under a signed ticket.
    public var provisionalPeers: Set<PlatformId> {
        guard persistentState.expunged == nil else { return [] }
        var peers = Set<PlatformId>()
        if let (_, ticket) = persistentState.preparedUnderTicket { peers.formUnion(ticket.ticket.members) }
        if case .coordinating(let coordinator) = state { peers.formUnion(coordinator.request.members) }
        peers.remove(platformId)
        return peers
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

    /// Starts coordinating the reconfiguration `ticket` names this node the
    /// coordinator of (or the initial setup, as the trusted dealer, when its
    /// last committed epoch is `nil`). The ticket's operator signature must
    /// verify; it travels with every `Prepare`.
    ///
    /// The new secret, its shares and the chain's salt are drawn here, from
    /// `random`; nothing else in the node draws randomness.
    public mutating func reconfigure(
        _ ticket: SignedTicket,
        using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        try checkTicket(ticket, kind: .reconfigure)
        let validated = try ValidatedReconfigureRequest(
            ticket.ticket.request,
            coordinator: platformId,
            rackId: rackId,
            state: persistentState,
            highestEpochSeen: highestEpochSeen,
            maximumMembers: options.maximumMembers
        )
        highestEpochSeen = validated.epoch
        let (secret, newShares) = Self.drawShares(validated, using: &random)

        guard let last = validated.lastCommitted else {
            prepare(validated, ticket: ticket, shares: newShares, chain: nil)
            return
        }
        let salt = random.bytes(EncryptedRackSecrets.saltByteCount)
        var collector = ShareCollector(configuration: last)
        collector.shares[platformId] = persistentState.shares[last.epoch]!
        let coordinator = Coordinator(
            request: validated,
            ticket: ticket,
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
        _ ticket: SignedTicket,
        using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        try checkTicket(ticket, kind: .upgradeFromLrtq)
        let validated = try ValidatedReconfigureRequest(
            upgrade: ticket.ticket.upgradeRequest,
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
            ticket: ticket,
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

    /// Commits `epoch`, which this node prepared, on the operator's commit
    /// `signature` over the prepared configuration (refused with
    /// ``CommitError/Code/unsigned`` if it does not verify). Committing an
    /// epoch at or below the latest committed one does nothing.
    public mutating func commit(_ epoch: Epoch, signature: OperatorSignature) throws(CommitError) {
        guard persistentState.expunged == nil else { throw CommitError(code: .expunged, epoch: epoch) }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        guard let config = persistentState.configurations[epoch], persistentState.shares[epoch] != nil else {
            throw CommitError(code: .notPrepared, epoch: epoch)
        }
        let signed = SignedConfiguration(config, signature: signature)
        guard signed.verifies(under: operatorVerifier) else { throw CommitError(code: .unsigned, epoch: epoch) }
        commit(signed)
    }

    /// Commits `signed`, a configuration this node may never have seen (it
    /// was down during the prepare), once its commit signature verifies: it
    /// then computes its share from K others.
    public mutating func prepareAndCommit(_ signed: SignedConfiguration) throws(CommitError) {
        let configuration = signed.configuration
        let epoch = configuration.epoch
        guard persistentState.expunged == nil else { throw CommitError(code: .expunged, epoch: epoch) }
        guard signed.verifies(under: operatorVerifier) else { throw CommitError(code: .unsigned, epoch: epoch) }
        guard configuration.rackId == rackId else { throw CommitError(code: .rackIdMismatch, epoch: epoch) }
        guard configuration.members[platformId] != nil else { throw CommitError(code: .notMember, epoch: epoch) }
        if let existing = persistentState.configurations[epoch], existing != configuration {
            output.alarms.append(.mismatchedConfigurations(epoch: epoch, from: configuration.coordinator))
            throw CommitError(code: .mismatchedConfiguration, epoch: epoch)
        }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        commit(signed)
    }

    /// The operator tells this node it was removed: `signed` is the
    /// committed configuration that leaves it out, with its commit signature
    /// (removed nodes are refused by their former peers, so they learn it
    /// from the operator). Recorded only above the latest commit; deletes
    /// the shares of the epochs below.
    public mutating func expunge(_ signed: SignedConfiguration) throws(CommitError) {
        let configuration = signed.configuration
        let epoch = configuration.epoch
        guard persistentState.expunged == nil else { return }
        guard configuration.rackId == rackId else { throw CommitError(code: .rackIdMismatch, epoch: epoch) }
        guard configuration.members[platformId] == nil else { throw CommitError(code: .stillMember, epoch: epoch) }
        guard signed.verifies(under: operatorVerifier) else { throw CommitError(code: .unsigned, epoch: epoch) }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        recordExpunged(epoch: epoch, from: configuration.coordinator)
    }

    /// Carries out a signed control-plane action (the operator's and the
    /// simulator's one way in): a ticket is coordinated, a commit committed.
    public mutating func perform(
        _ action: SignedAction, using random: inout some SecureRandomSource
    ) throws(ActionError) {
        switch action {
        case .reconfigure(let ticket):
            do { try reconfigure(ticket, using: &random) } catch { throw .reconfigure(error) }
        case .upgradeFromLrtq(let ticket):
            do { try upgradeFromLrtq(ticket, using: &random) } catch { throw .reconfigure(error) }
        case .commit(_, let epoch, let signature):
            do { try commit(epoch, signature: signature) } catch { throw .commit(error) }
        case .prepareAndCommit(_, let signed):
            do { try prepareAndCommit(signed) } catch { throw .commit(error) }
        }
    }

    /// Checks that `ticket` is of `kind`, names this node its coordinator
    /// and carries a valid operator signature.
    func checkTicket(_ ticket: SignedTicket, kind: ReconfigureTicket.Kind) throws(ReconfigureError) {
        guard ticket.ticket.kind == kind else {
            throw ReconfigureError(
                code: .wrongTicket, reason: "a \(ticket.ticket.kind.rawValue) ticket, not \(kind.rawValue)")
        }
        guard ticket.ticket.coordinator == platformId else {
            throw ReconfigureError(
                code: .wrongTicket,
                reason: "the ticket names \(ticket.ticket.coordinator) the coordinator, not this node")
        }
        guard ticket.verifies(under: operatorVerifier) else {
            throw ReconfigureError(code: .unsigned, reason: "the ticket's operator signature does not verify")
        }
    }

    /// Records that `message` from `peer` was refused for `reason`, and counts it.
    mutating func refuse(_ message: Message.Kind, from peer: PlatformId, _ reason: String) {
        rejectedMessages += 1
        output.refusals.append(
            RefusedMessage(from: peer, message: Message(rackId: rackId, kind: message).description, reason: reason))
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
