import KeyrackCore
import SecretSharing

// Commits, the end of share collection, preparing, and computing a share
// of a configuration committed without preparing it.

extension Node {
    // MARK: - Transitions

    /// Records the commit of `signed` (which lists this node and whose
    /// signature was verified) with its signature, prunes older epochs (the
    /// old share goes in the same write that records the signed commit),
    /// cancels work the commit made stale and, if this node holds no share
    /// of it, starts computing one.
    mutating func commit(_ signed: SignedConfiguration) {
        let config = signed.configuration
        let epoch = config.epoch
        persistentState.configurations[epoch] = config
        persistentState.commitSignatures[epoch] = signed.signature
        persistentState.committedEpochs.insert(epoch)
        persistentState.prune(below: epoch)
        highestEpochSeen = max(highestEpochSeen ?? epoch, epoch)
        output.persistentStateChanged = true
        if let loading = loader?.epoch, loading < epoch { loader = nil }
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
        case .computingShare(let computation):
            if computation.epoch < epoch { state = .idle }
        }
        if persistentState.shares[epoch] == nil {
            let computation = ShareComputation(configuration: config, platformId: platformId)
            state = .computingShare(computation)
            ask(config.sortedMembers, computation.request(for:))
        }
    }

    mutating func finishCollecting(_ coordinator: Coordinator, _ collecting: CollectingShares) {
        let request = coordinator.request
        let old = collecting.collector.configuration
        let oldSecret: RackSecret
        do {
            oldSecret = try collecting.collector.combine()
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
        prepare(request, ticket: coordinator.ticket, shares: collecting.newShares, chain: sealed)
    }

    mutating func finishCollectingLrtq(_ coordinator: Coordinator, _ collecting: CollectingLrtqShares) {
        let request = coordinator.request
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
        prepare(request, ticket: coordinator.ticket, shares: collecting.newShares, chain: sealed)
    }

    /// Draws the new secret and splits it among the request's members.
    static func drawShares(
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
    mutating func prepare(
        _ request: ValidatedReconfigureRequest,
        ticket: SignedTicket,
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
        persistentState.keepOnlyPrepared(config, share: shares[platformId]!, ticket: ticket)
        output.persistentStateChanged = true
        var others = shares
        others[platformId] = nil
        let coordinator = Coordinator(
            request: request,
            ticket: ticket,
            phase: .preparing(Preparing(configuration: config, shares: others, acked: [platformId]))
        )
        state = .coordinating(coordinator)
        ask(config.sortedMembers, coordinator.request(for:))
    }

    mutating func finishComputingShare(epoch: Epoch, _ computed: Result<Share, ShareComputationFailure>) {
        state = .idle
        switch computed {
        case .success(let share):
            persistentState.shares[epoch] = share
            output.persistentStateChanged = true
        case .failure(let failure):
            output.alarms.append(.shareComputationFailed(epoch: epoch, reason: failure.reason))
        }
    }
}
