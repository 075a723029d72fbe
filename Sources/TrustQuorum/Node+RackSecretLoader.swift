import KeyrackCore
import SecretSharing

// The rack-secret loader: gathering K shares of the latest committed epoch,
// combining them, and reading older epochs from the chain.

extension Node {
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
        if loader?.epoch != latestEpoch {
            let started = RackSecretLoader(configuration: latest, ownShare: ownShare, platformId: platformId)
            loader = started
            ask(latest.sortedMembers, started.request(for:))
        }
        return nil
    }

    /// The LRTQ secret if rebuilt, else starts (or continues) gathering LRTQ shares.
    mutating func lrtqSecret(_ lrtq: LrtqState) -> RackSecret? {
        if let cached = secretCache[.lrtq] { return cached }
        if lrtqLoader == nil {
            var collector = LrtqShareCollector(threshold: lrtq.threshold)
            _ = collector.add(lrtq.share, from: platformId, lrtq: lrtq)
            lrtqLoader = collector
            output.warnings.append(.lrtqDeprecated(.unlocking))
            ask(connectedPeers.sorted(), collector.request(for:))
        }
        return nil
    }

    mutating func secretFromChain(
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

    mutating func finishLoading(epoch: Epoch, _ combined: Result<RackSecret, SecretSharingError>) {
        loader = nil
        switch combined {
        case .success(let secret):
            secretCache[epoch] = secret
        case .failure(let error):
            output.alarms.append(.rackSecretReconstructionFailed(epoch: epoch, reason: "\(error)"))
        }
    }
}
