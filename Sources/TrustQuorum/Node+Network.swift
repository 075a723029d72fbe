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
        case .prepare(let config, let share, let ticket): receivedPrepare(from: from, config, share, ticket)
        case .prepareAck(let epoch): receivedPrepareAck(from: from, epoch)
        case .getShare(let epoch): receivedGetShare(from: from, epoch)
        case .share(let epoch, let share): receivedShare(from: from, epoch, share)
        case .commitAdvance(let signed): receivedCommitAdvance(from: from, signed)
        case .expunged(let signed): receivedExpunged(from: from, signed)
        case .getLrtqShare: receivedGetLrtqShare(from: from)
        case .lrtqShare(let share): receivedLrtqShare(from: from, share)
        }
    }

    mutating func receivedPrepare(from: PlatformId, _ config: Configuration, _ share: Share, _ ticket: SignedTicket) {
        let kind = Message.Kind.prepare(config, share, ticket)
        guard config.rackId == rackId else { return }
        // The operator's ticket names the coordinator and what it may prepare.
        guard ticket.ticket.allows(config), from == ticket.ticket.coordinator else {
            refuse(kind, from: from, "the Prepare does not match its ticket (epoch, coordinator, members or K)")
            return
        }
        guard ticket.verifies(under: operatorVerifier) else {
            refuse(kind, from: from, "the ticket's operator signature does not verify")
            return
        }
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
            // Would exhaust the epochs (or persist a stream of them).
            refuse(kind, from: from, "epoch \(epoch) is beyond reach of the latest commit")
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
        persistentState.keepOnlyPrepared(config, share: share, ticket: ticket)
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
            pointAtLatest(from)
            return
        }
        guard let config = persistentState.configurations[epoch], let share = persistentState.shares[epoch] else {
            return  // we are behind, or still computing our own share
        }
        guard config.members[from] != nil else {
            if epoch == persistentState.latestCommittedEpoch { pointAtLatest(from) }
            return
        }
        send(.share(epoch, share), to: from)
    }

    /// Tells `peer`, which asked about an older epoch, about the latest
    /// committed configuration with its commit signature: `CommitAdvance`
    /// to a member, `Expunged` to anyone else. Without a signature (a state
    /// written before signatures) there is nothing the peer could check, so
    /// nothing is sent.
    mutating func pointAtLatest(_ peer: PlatformId) {
        guard let signed = persistentState.latestSignedConfiguration else { return }
        send(signed.configuration.members[peer] != nil ? .commitAdvance(signed) : .expunged(signed), to: peer)
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
            case .finished(let collecting): finishCollecting(coordinator, collecting)
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
        if persistentState.latestCommittedEpoch != nil {
            pointAtLatest(from)
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
            case .finished(let collecting): finishCollectingLrtq(coordinator, collecting)
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

    mutating func receivedCommitAdvance(from: PlatformId, _ signed: SignedConfiguration) {
        let config = signed.configuration
        guard config.rackId == rackId else { return }
        guard config.epoch.isWithinReach(of: persistentState.latestCommittedEpoch) else {
            refuse(.commitAdvance(signed), from: from, "epoch \(config.epoch) is beyond reach of the latest commit")
            return
        }
        guard signed.verifies(under: operatorVerifier) else {
            refuse(.commitAdvance(signed), from: from, "the commit's operator signature does not verify")
            return
        }
        if let existing = persistentState.configurations[config.epoch], existing != config {
            output.alarms.append(.mismatchedConfigurations(epoch: config.epoch, from: from))
            return
        }
        if let latest = persistentState.latestCommittedEpoch, config.epoch <= latest { return }
        guard config.members[platformId] != nil else { return }
        commit(signed)
    }

    /// Acted on only with the operator's signed configuration of the epoch
    /// that leaves this node out, above its latest commit: then the node
    /// records it and deletes its shares of the epochs below (rule "Nothing
    /// irreversible on a peer's word").
    mutating func receivedExpunged(from: PlatformId, _ signed: SignedConfiguration) {
        let config = signed.configuration
        let epoch = config.epoch
        guard config.rackId == rackId else { return }
        if let latest = persistentState.latestCommittedEpoch {
            guard epoch > latest else { return }
        } else {
            // Still in LRTQ while the rack moved on without this node.
            guard persistentState.lrtq != nil, epoch > .lrtq else { return }
        }
        guard config.members[platformId] == nil else {
            refuse(.expunged(signed), from: from, "the configuration of epoch \(epoch) lists this node")
            return
        }
        guard signed.verifies(under: operatorVerifier) else {
            refuse(.expunged(signed), from: from, "the configuration's operator signature does not verify")
            return
        }
        recordExpunged(epoch: epoch, from: from)
    }

    /// Records that this node was left out at `epoch` (told by `from`) and
    /// deletes its shares of the epochs below; it then ignores everything.
    mutating func recordExpunged(epoch: Epoch, from: PlatformId) {
        persistentState.expunged = ExpungedMetadata(epoch: epoch, from: from)
        for old in persistentState.shares.keys where old < epoch { persistentState.shares[old] = nil }
        persistentState.lrtq = nil
        lrtqLoader = nil
        output.persistentStateChanged = true
        state = .idle
        loader = nil
        secretCache.removeAll()
    }
}
