import KeyrackCore
import SecretSharing

// What peers send: each message kind and what the node does with it.

extension Node {
    // MARK: - Inputs from the network

    /// An authenticated channel to `peer` is up: resend whatever `peer` is
    /// still missing.
    public mutating func connected(_ peer: PlatformId) {
        connectedPeers.insert(peer)
        guard persistentState.expunged == nil else { return }
        let requests: [Message.Kind?]
        switch state {
        case .idle: requests = []
        case .coordinating(let coordinator): requests = [coordinator.request(for: peer)]
        case .computingShare(let computation): requests = [computation.request(for: peer)]
        }
        for case let kind? in requests + [loader?.request(for: peer), lrtqLoader?.request(for: peer)] {
            send(kind, to: peer)
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

    mutating func receivedPrepare(from: PlatformId, _ config: Configuration, _ share: Share) {
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
        guard epoch.isWithinReach(of: persistentState.latestCommittedEpoch) else {
            rejectedMessages += 1  // would exhaust the epochs (or persist a stream of them)
            return
        }
        guard config.validates(share, from: platformId) else {
            rejectedShares += 1
            return
        }
        if case .coordinating(let coordinator) = state {
            guard coordinator.request.epoch < epoch else { return }  // ours is newer
            state = .idle  // a newer reconfiguration cancels ours
        }
        persistentState.keepOnlyPrepared(config, share: share)
        highestEpochSeen = max(highestEpochSeen ?? epoch, epoch)
        output.persistentStateChanged = true
        send(.prepareAck(epoch), to: from)
    }

    mutating func receivedPrepareAck(from: PlatformId, _ epoch: Epoch) {
        guard case .coordinating(var coordinator) = state else { return }
        coordinator.receivedAck(of: epoch, from: from)
        state = .coordinating(coordinator)
    }

    mutating func receivedGetShare(from: PlatformId, _ epoch: Epoch) {
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

    mutating func receivedShare(from: PlatformId, _ epoch: Epoch, _ share: Share) {
        guard let config = persistentState.configurations[epoch], config.validates(share, from: from) else {
            rejectedShares += 1
            return
        }
        switch state {
        case .idle:
            break
        case .coordinating(var coordinator):
            switch coordinator.received(share, of: epoch, from: from) {
            case .ignored: break
            case .collecting: state = .coordinating(coordinator)
            case .finished(let collecting): finishCollecting(coordinator.request, collecting)
            }
        case .computingShare(var computation):
            switch computation.received(share, of: epoch, from: from) {
            case .ignored: break
            case .collecting: state = .computingShare(computation)
            case .finished(let computed): finishComputingShare(epoch: epoch, computed)
            }
        }
        if var loader {
            switch loader.received(share, of: epoch, from: from) {
            case .ignored: break
            case .collecting: self.loader = loader
            case .finished(let combined): finishLoading(epoch: epoch, combined)
            }
        }
    }

    /// Mixed mode: a node answers LRTQ requests until its first committed
    /// trust-quorum configuration; afterwards it points members at that
    /// configuration (they commit it and compute their share) and tells
    /// anyone else it was expunged.
    mutating func receivedGetLrtqShare(from: PlatformId) {
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

    mutating func receivedLrtqShare(from: PlatformId, _ share: Share) {
        guard let lrtq = persistentState.lrtq else { return }  // left LRTQ, or never in it
        var rejected = false
        if case .coordinating(var coordinator) = state {
            let (refused, progress) = coordinator.receivedLrtqShare(share, from: from, lrtq: lrtq)
            rejected = refused
            switch progress {
            case .ignored: break
            case .collecting: state = .coordinating(coordinator)
            case .finished(let collecting): finishCollectingLrtq(coordinator.request, collecting)
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

    mutating func receivedCommitAdvance(from: PlatformId, _ config: Configuration) {
        guard config.rackId == rackId else { return }
        if let existing = persistentState.configurations[config.epoch], existing != config {
            output.alarms.append(.mismatchedConfigurations(epoch: config.epoch, from: from))
            return
        }
        if let latest = persistentState.latestCommittedEpoch, config.epoch <= latest { return }
        guard config.members[platformId] != nil else { return }
        guard config.epoch.isWithinReach(of: persistentState.latestCommittedEpoch) else {
            rejectedMessages += 1
            return
        }
        commit(configuration: config)
    }

    mutating func receivedExpunged(from: PlatformId, _ epoch: Epoch) {
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
}
