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
    public private(set) var persistentState: PersistentState
    /// Shares from peers that did not match the digest in the configuration,
    /// or came from a non-member, and were ignored.
    public private(set) var rejectedShares = 0

    private var state: State = .idle
    private var connectedPeers: Set<PlatformId> = []
    private var loader: ShareCollector?
    private var lrtqLoader: LrtqShareCollector?
    private var secretCache: [Epoch: RackSecret] = [:]
    private var chainOpenedAt: Epoch?
    /// The highest epoch this node has seen in a request, a `Prepare` or a
    /// configuration (an operator resuming a reconfiguration starts above it).
    public private(set) var highestEpochSeen: Epoch?
    private var output = NodeOutput()

    private enum State: Sendable {
        case idle
        case coordinating(Coordinator)
        case computingShare(ShareCollector)
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
            state = .computingShare(ShareCollector(configuration: config))
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
        if case .computingShare(let collector) = state { return collector.configuration.epoch }
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
        state = .coordinating(
            Coordinator(
                request: validated,
                phase: .collectingShares(
                    CollectingShares(collector: collector, newSecret: secret, salt: salt, newShares: newShares)
                )
            )
        )
        for peer in last.sortedMembers where peer != platformId && connectedPeers.contains(peer) {
            send(.getShare(last.epoch), to: peer)
        }
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
        state = .coordinating(
            Coordinator(
                request: validated,
                phase: .collectingLrtqShares(
                    CollectingLrtqShares(collector: collector, newSecret: secret, salt: salt, newShares: newShares)
                )
            )
        )
        for peer in validated.members.sorted() where peer != platformId && connectedPeers.contains(peer) {
            send(.getLrtqShare, to: peer)
        }
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

    // MARK: - Loading the rack secret

    /// The rack secret of `epoch` (the latest committed epoch or an older
    /// one), or `nil` while shares are still being gathered: poll again after
    /// more input.
    ///
    /// The latest secret is rebuilt from K shares; older ones come from the
    /// chain the latest configuration carries, whatever the number of epochs
    /// missed.
    public mutating func loadRackSecret(_ epoch: Epoch) throws(LoadRackSecretError) -> RackSecret? {
        guard persistentState.expunged == nil else { throw LoadRackSecretError(code: .expunged, epoch: epoch) }
        if let cached = secretCache[epoch] { return cached }
        guard let latestEpoch = persistentState.latestCommittedEpoch else {
            if let lrtq = persistentState.lrtq {
                // Legacy mode: the LRTQ secret is epoch 1.
                guard epoch == .lrtq else { throw LoadRackSecretError(code: .notCommitted, epoch: epoch) }
                return lrtqSecret(lrtq)
            }
            throw LoadRackSecretError(code: .noCommittedConfiguration, epoch: epoch)
        }
        guard let latest = persistentState.configurations[latestEpoch] else {
            output.alarms.append(.committedConfigurationLost(epoch: latestEpoch))
            throw LoadRackSecretError(code: .failed, epoch: epoch)
        }
        guard epoch <= latestEpoch else { throw LoadRackSecretError(code: .notCommitted, epoch: epoch) }
        if let latestSecret = secretCache[latestEpoch] {
            return try secretFromChain(epoch, latest: latest, latestSecret: latestSecret)
        }
        guard let ownShare = persistentState.shares[latestEpoch] else {
            return nil  // still computing our share
        }
        if loader?.configuration.epoch != latestEpoch {
            var collector = ShareCollector(configuration: latest)
            collector.shares[platformId] = ownShare
            loader = collector
            for peer in latest.sortedMembers where peer != platformId && connectedPeers.contains(peer) {
                send(.getShare(latestEpoch), to: peer)
            }
        }
        return nil
    }

    /// The LRTQ secret if rebuilt, else starts (or continues) gathering LRTQ shares.
    private mutating func lrtqSecret(_ lrtq: LrtqState) -> RackSecret? {
        if let cached = secretCache[.lrtq] { return cached }
        if lrtqLoader == nil {
            var collector = LrtqShareCollector(threshold: lrtq.threshold)
            _ = collector.add(lrtq.share, from: platformId, lrtq: lrtq)
            lrtqLoader = collector
            output.warnings.append(.lrtqDeprecated(.unlocking))
            for peer in connectedPeers.sorted() { send(.getLrtqShare, to: peer) }
        }
        return nil
    }

    private mutating func secretFromChain(
        _ epoch: Epoch,
        latest: Configuration,
        latestSecret: RackSecret
    ) throws(LoadRackSecretError) -> RackSecret {
        if epoch == latest.epoch { return latestSecret }
        guard chainOpenedAt != latest.epoch, let chain = latest.encryptedRackSecrets else {
            throw LoadRackSecretError(code: .unavailable, epoch: epoch)
        }
        do {
            let secrets = try RackSecretChain.open(chain, with: latestSecret, rackId: rackId, epoch: latest.epoch)
            secretCache.merge(secrets) { current, _ in current }
            chainOpenedAt = latest.epoch
        } catch {
            output.alarms.append(.rackSecretDecryptionFailed(epoch: latest.epoch))
            throw LoadRackSecretError(code: .failed, epoch: epoch)
        }
        guard let secret = secretCache[epoch] else { throw LoadRackSecretError(code: .unavailable, epoch: epoch) }
        return secret
    }

    // MARK: - Inputs from the network

    /// An authenticated channel to `peer` is up: resend whatever `peer` is
    /// still missing.
    public mutating func connected(_ peer: PlatformId) {
        connectedPeers.insert(peer)
        guard persistentState.expunged == nil else { return }
        switch state {
        case .idle:
            break
        case .coordinating(let coordinator):
            switch coordinator.phase {
            case .collectingShares(let collecting):
                let old = collecting.collector.configuration
                if old.members[peer] != nil, collecting.collector.shares[peer] == nil {
                    send(.getShare(old.epoch), to: peer)
                }
            case .collectingLrtqShares(let collecting):
                if coordinator.request.members.contains(peer), !collecting.collector.senders.contains(peer) {
                    send(.getLrtqShare, to: peer)
                }
            case .preparing(let preparing):
                if let share = preparing.shares[peer], !preparing.acked.contains(peer) {
                    send(.prepare(preparing.configuration, share), to: peer)
                }
            }
        case .computingShare(let collector):
            if collector.configuration.members[peer] != nil, collector.shares[peer] == nil {
                send(.getShare(collector.configuration.epoch), to: peer)
            }
        }
        if let loader, loader.configuration.members[peer] != nil, loader.shares[peer] == nil {
            send(.getShare(loader.configuration.epoch), to: peer)
        }
        if let lrtqLoader, !lrtqLoader.senders.contains(peer) {
            send(.getLrtqShare, to: peer)
        }
    }

    /// The channel to `peer` went down.
    public mutating func disconnected(_ peer: PlatformId) {
        connectedPeers.remove(peer)
    }

    /// `message` arrived from `from` (the platform id the channel authenticated).
    public mutating func received(from: PlatformId, message: Message) {
        guard message.rackId == rackId, persistentState.expunged == nil else { return }
        switch message.kind {
        case .prepare(let config, let share): receivedPrepare(from: from, config, share)
        case .prepareAck(let epoch): receivedPrepareAck(from: from, epoch)
        case .getShare(let epoch): receivedGetShare(from: from, epoch)
        case .share(let epoch, let share): receivedShare(from: from, epoch, share)
        case .commitAdvance(let config): receivedCommitAdvance(from: from, config)
        case .expunged(let epoch): receivedExpunged(from: from, epoch)
        case .getLrtqShare: receivedGetLrtqShare(from: from)
        case .lrtqShare(let share): receivedLrtqShare(from: from, share)
        }
    }

    private mutating func receivedPrepare(from: PlatformId, _ config: Configuration, _ share: Share) {
        guard config.rackId == rackId, from == config.coordinator else { return }
        let epoch = config.epoch
        if let existing = persistentState.configurations[epoch] {
            if existing != config {
                output.alarms.append(.mismatchedConfigurations(epoch: epoch, from: from))
            } else if persistentState.shares[epoch] != nil {
                send(.prepareAck(epoch), to: from)  // a resend: our ack was lost
            } else if config.validates(share, from: platformId) {
                // We committed this epoch without preparing and are computing
                // our share: the coordinator's late Prepare carries it.
                persistentState.shares[epoch] = share
                output.persistentStateChanged = true
                if computingShareEpoch == epoch { state = .idle }
                send(.prepareAck(epoch), to: from)
            }
            return
        }
        if let latest = persistentState.latestCommittedEpoch, epoch <= latest { return }
        if let known = persistentState.latestKnownEpoch, epoch < known { return }  // older than a prepare we hold
        guard config.validates(share, from: platformId) else {
            rejectedShares += 1
            return
        }
        if case .coordinating(let coordinator) = state {
            guard coordinator.request.epoch < epoch else { return }  // ours is newer
            state = .idle  // a newer reconfiguration cancels ours
        }
        persistentState.configurations[epoch] = config
        persistentState.shares[epoch] = share
        highestEpochSeen = max(highestEpochSeen ?? epoch, epoch)
        output.persistentStateChanged = true
        send(.prepareAck(epoch), to: from)
    }

    private mutating func receivedPrepareAck(from: PlatformId, _ epoch: Epoch) {
        guard case .coordinating(var coordinator) = state, case .preparing(var preparing) = coordinator.phase,
            preparing.configuration.epoch == epoch, preparing.configuration.members[from] != nil
        else { return }
        preparing.acked.insert(from)
        coordinator.phase = .preparing(preparing)
        state = .coordinating(coordinator)
    }

    private mutating func receivedGetShare(from: PlatformId, _ epoch: Epoch) {
        if let latest = persistentState.latestCommittedConfiguration, epoch < latest.epoch {
            if latest.members[from] != nil {
                send(.commitAdvance(latest), to: from)
            } else {
                send(.expunged(latest.epoch), to: from)
            }
            return
        }
        guard let config = persistentState.configurations[epoch], let share = persistentState.shares[epoch] else {
            return  // we are behind, or still computing our own share
        }
        guard config.members[from] != nil else {
            if epoch == persistentState.latestCommittedEpoch { send(.expunged(epoch), to: from) }
            return
        }
        send(.share(epoch, share), to: from)
    }

    private mutating func receivedShare(from: PlatformId, _ epoch: Epoch, _ share: Share) {
        guard let config = persistentState.configurations[epoch], config.validates(share, from: from) else {
            rejectedShares += 1
            return
        }
        switch state {
        case .idle:
            break
        case .coordinating(var coordinator):
            if case .collectingShares(var collecting) = coordinator.phase,
                collecting.collector.configuration.epoch == epoch
            {
                collecting.collector.shares[from] = share
                if collecting.collector.isComplete {
                    finishCollecting(coordinator.request, collecting)
                } else {
                    coordinator.phase = .collectingShares(collecting)
                    state = .coordinating(coordinator)
                }
            }
        case .computingShare(var collector):
            if collector.configuration.epoch == epoch {
                collector.shares[from] = share
                if collector.isComplete {
                    finishComputingShare(collector)
                } else {
                    state = .computingShare(collector)
                }
            }
        }
        if var loader, loader.configuration.epoch == epoch {
            loader.shares[from] = share
            self.loader = loader
            if loader.isComplete { finishLoading(loader) }
        }
    }

    /// Mixed mode: a node answers LRTQ requests until its first committed
    /// trust-quorum configuration; afterwards it points members at that
    /// configuration (they commit it and compute their share) and tells
    /// anyone else it was expunged.
    private mutating func receivedGetLrtqShare(from: PlatformId) {
        if let latest = persistentState.latestCommittedConfiguration {
            if latest.members[from] != nil {
                send(.commitAdvance(latest), to: from)
            } else {
                send(.expunged(latest.epoch), to: from)
            }
            return
        }
        guard let lrtq = persistentState.lrtq else { return }  // never in LRTQ
        output.warnings.append(.lrtqDeprecated(.answeredShareRequest))
        send(.lrtqShare(lrtq.share), to: from)
    }

    private mutating func receivedLrtqShare(from: PlatformId, _ share: Share) {
        guard let lrtq = persistentState.lrtq else { return }  // left LRTQ, or never in it
        var rejected = false
        if case .coordinating(var coordinator) = state, case .collectingLrtqShares(var collecting) = coordinator.phase {
            rejected = collecting.collector.add(share, from: from, lrtq: lrtq) == .rejected
            if collecting.collector.isComplete {
                finishCollectingLrtq(coordinator.request, collecting)
            } else {
                coordinator.phase = .collectingLrtqShares(collecting)
                state = .coordinating(coordinator)
            }
        }
        if var lrtqLoader {
            rejected = lrtqLoader.add(share, from: from, lrtq: lrtq) == .rejected || rejected
            self.lrtqLoader = lrtqLoader
            if lrtqLoader.isComplete {
                self.lrtqLoader = nil
                do {
                    secretCache[.lrtq] = try lrtqLoader.combine()
                } catch {
                    output.alarms.append(.rackSecretReconstructionFailed(epoch: .lrtq, reason: "\(error)"))
                }
            }
        }
        if rejected { rejectedShares += 1 }
    }

    private mutating func receivedCommitAdvance(from: PlatformId, _ config: Configuration) {
        guard config.rackId == rackId else { return }
        if let existing = persistentState.configurations[config.epoch], existing != config {
            output.alarms.append(.mismatchedConfigurations(epoch: config.epoch, from: from))
            return
        }
        if let latest = persistentState.latestCommittedEpoch, config.epoch <= latest { return }
        guard config.members[platformId] != nil else { return }
        commit(configuration: config)
    }

    private mutating func receivedExpunged(from: PlatformId, _ epoch: Epoch) {
        if let latest = persistentState.latestCommittedEpoch {
            guard epoch > latest else { return }
        } else {
            // Still in LRTQ while the rack moved on without this node.
            guard persistentState.lrtq != nil, epoch > .lrtq else { return }
        }
        persistentState.expunged = ExpungedMetadata(epoch: epoch, from: from)
        persistentState.shares.removeAll()
        persistentState.lrtq = nil
        lrtqLoader = nil
        output.persistentStateChanged = true
        state = .idle
        loader = nil
        secretCache.removeAll()
    }

    // MARK: - Transitions

    /// Records the commit of `config` (which lists this node), prunes older
    /// epochs, cancels work the commit made stale and, if this node holds no
    /// share of it, starts computing one.
    private mutating func commit(configuration config: Configuration) {
        let epoch = config.epoch
        persistentState.configurations[epoch] = config
        persistentState.committedEpochs.insert(epoch)
        for old in persistentState.configurations.keys where old < epoch {
            persistentState.configurations[old] = nil
        }
        for old in persistentState.shares.keys where old < epoch {
            persistentState.shares[old] = nil
        }
        highestEpochSeen = max(highestEpochSeen ?? epoch, epoch)
        output.persistentStateChanged = true
        if let loading = loader?.configuration.epoch, loading < epoch { loader = nil }
        if persistentState.lrtq != nil {
            // The first committed trust-quorum configuration: LRTQ is left for
            // good. Epoch 1 is read from the chain from now on.
            persistentState.lrtq = nil
            lrtqLoader = nil
            secretCache[.lrtq] = nil
        }

        switch state {
        case .idle:
            break
        case .coordinating(let coordinator):
            // Coordination built on an older commit, or of this very epoch, is done or stale.
            if (coordinator.request.lastCommitted?.epoch ?? Epoch(0)) < epoch || coordinator.request.epoch <= epoch {
                state = .idle
            }
        case .computingShare(let collector):
            if collector.configuration.epoch < epoch { state = .idle }
        }
        if persistentState.shares[epoch] == nil {
            state = .computingShare(ShareCollector(configuration: config))
            for peer in config.sortedMembers where peer != platformId && connectedPeers.contains(peer) {
                send(.getShare(epoch), to: peer)
            }
        }
    }

    private mutating func finishCollecting(_ request: ValidatedReconfigureRequest, _ collecting: CollectingShares) {
        let old = collecting.collector.configuration
        let oldSecret: RackSecret
        do {
            let combined = try Shamir.combine(collecting.collector.orderedShares, threshold: old.threshold)
            guard let secret = RackSecret(combined) else {
                throw SecretSharingError.emptySecret
            }
            oldSecret = secret
        } catch {
            output.alarms.append(.rackSecretReconstructionFailed(epoch: old.epoch, reason: "\(error)"))
            state = .idle
            return
        }
        secretCache[old.epoch] = oldSecret
        var secrets: [Epoch: RackSecret] = [:]
        if let chain = old.encryptedRackSecrets {
            do {
                secrets = try RackSecretChain.open(chain, with: oldSecret, rackId: rackId, epoch: old.epoch)
            } catch {
                output.alarms.append(.rackSecretDecryptionFailed(epoch: old.epoch))
                state = .idle
                return
            }
        }
        secrets[old.epoch] = oldSecret
        let sealed = RackSecretChain.seal(
            secrets,
            under: collecting.newSecret,
            rackId: rackId,
            epoch: request.epoch,
            salt: collecting.salt
        )
        prepare(request, shares: collecting.newShares, chain: sealed)
    }

    private mutating func finishCollectingLrtq(
        _ request: ValidatedReconfigureRequest,
        _ collecting: CollectingLrtqShares
    ) {
        let lrtqSecret: RackSecret
        do {
            lrtqSecret = try collecting.collector.combine()
        } catch {
            output.alarms.append(.rackSecretReconstructionFailed(epoch: .lrtq, reason: "\(error)"))
            state = .idle
            return
        }
        let sealed = RackSecretChain.seal(
            [.lrtq: lrtqSecret],
            under: collecting.newSecret,
            rackId: rackId,
            epoch: request.epoch,
            salt: collecting.salt
        )
        prepare(request, shares: collecting.newShares, chain: sealed)
    }

    /// Draws the new secret and splits it among the request's members.
    private static func drawShares(
        _ request: ValidatedReconfigureRequest,
        using random: inout some SecureRandomSource
    ) -> (RackSecret, [PlatformId: Share]) {
        let secret = RackSecret.random(using: &random)
        let sortedMembers = request.members.sorted()
        // 3 ≤ N ≤ 255 and 2 ≤ K < N were validated, and the secret is 32 bytes.
        let split = try! Shamir.split(
            secret.bytes,
            threshold: request.threshold,
            shares: sortedMembers.count,
            using: &random
        )
        var shares: [PlatformId: Share] = [:]
        for (member, share) in zip(sortedMembers, split) { shares[member] = share }
        return (secret, shares)
    }

    /// Builds the configuration, persists our share and sends `Prepare`s.
    private mutating func prepare(
        _ request: ValidatedReconfigureRequest,
        shares: [PlatformId: Share],
        chain: EncryptedRackSecrets?
    ) {
        let digests = shares.mapValues(\.digest)
        // The request was validated: N and K are in range and we are a member.
        let config = try! Configuration(
            rackId: rackId,
            epoch: request.epoch,
            coordinator: platformId,
            members: digests,
            threshold: request.threshold,
            encryptedRackSecrets: chain
        )
        persistentState.configurations[config.epoch] = config
        persistentState.shares[config.epoch] = shares[platformId]!
        output.persistentStateChanged = true
        var others = shares
        others[platformId] = nil
        state = .coordinating(
            Coordinator(
                request: request,
                phase: .preparing(Preparing(configuration: config, shares: others, acked: [platformId]))
            )
        )
        for peer in config.sortedMembers where peer != platformId && connectedPeers.contains(peer) {
            send(.prepare(config, others[peer]!), to: peer)
        }
    }

    private mutating func finishComputingShare(_ collector: ShareCollector) {
        let config = collector.configuration
        state = .idle
        // We are a member: commit(configuration:) only starts a computation for configurations listing us.
        let x = config.xCoordinate(of: platformId)!
        do {
            let share = try Shamir.recompute(at: x, from: collector.orderedShares, threshold: config.threshold)
            guard config.validates(share, from: platformId) else {
                output.alarms.append(
                    .shareComputationFailed(epoch: config.epoch, reason: "the computed share does not match our digest")
                )
                return
            }
            persistentState.shares[config.epoch] = share
            output.persistentStateChanged = true
        } catch {
            output.alarms.append(.shareComputationFailed(epoch: config.epoch, reason: "\(error)"))
        }
    }

    private mutating func finishLoading(_ collector: ShareCollector) {
        loader = nil
        let config = collector.configuration
        do {
            let combined = try Shamir.combine(collector.orderedShares, threshold: config.threshold)
            guard let secret = RackSecret(combined) else { throw SecretSharingError.emptySecret }
            secretCache[config.epoch] = secret
        } catch {
            output.alarms.append(.rackSecretReconstructionFailed(epoch: config.epoch, reason: "\(error)"))
        }
    }

    private mutating func send(_ kind: Message.Kind, to peer: PlatformId) {
        output.messages.append(OutgoingMessage(to: peer, message: Message(rackId: rackId, kind: kind)))
    }
}

// MARK: - Coordinator phases and share collection

/// Validated shares of one configuration gathered from its members.
struct ShareCollector: Sendable {
    let configuration: Configuration
    /// Keyed by sender; each was checked against the sender's digest.
    var shares: [PlatformId: Share] = [:]

    init(configuration: Configuration) { self.configuration = configuration }

    var isComplete: Bool { shares.count >= configuration.threshold }

    /// Exactly K shares, in x order, so that the result never depends on
    /// dictionary order.
    var orderedShares: [Share] {
        Array(shares.values.sorted { $0.x < $1.x }.prefix(configuration.threshold))
    }
}

/// A reconfiguration this node coordinates.
struct Coordinator: Sendable {
    let request: ValidatedReconfigureRequest
    var phase: Phase

    enum Phase: Sendable {
        /// Gathering K shares of the last committed epoch.
        case collectingShares(CollectingShares)
        /// Upgrading from LRTQ: gathering K LRTQ shares.
        case collectingLrtqShares(CollectingLrtqShares)
        /// The new configuration is built; waiting for acknowledgements.
        case preparing(Preparing)
    }
}

/// Phase 1: the new secret and its shares are drawn; the old secret is
/// needed to extend the chain.
struct CollectingShares: Sendable {
    var collector: ShareCollector
    let newSecret: RackSecret
    let salt: [UInt8]
    let newShares: [PlatformId: Share]
}

/// Phase 1 of the upgrade from LRTQ: the new secret and its shares are
/// drawn; the LRTQ secret is needed to start the chain as epoch 1.
struct CollectingLrtqShares: Sendable {
    var collector: LrtqShareCollector
    let newSecret: RackSecret
    let salt: [UInt8]
    let newShares: [PlatformId: Share]
}

/// Phase 2: `Prepare` sent (and resent on connect) until acknowledged.
struct Preparing: Sendable {
    let configuration: Configuration
    /// The other members' shares.
    let shares: [PlatformId: Share]
    var acked: Set<PlatformId>
}
