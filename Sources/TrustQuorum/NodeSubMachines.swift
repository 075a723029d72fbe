import KeyrackCore
import SecretSharing

// The node's sub-machines, as Oxide's trust quorum separates them: the
// coordinator of a reconfiguration, the computation of a share of a
// configuration committed without preparing it, and the loader of the rack
// secret (the LRTQ loader is `LrtqShareCollector`, in Lrtq.swift). Each owns
// what it asks a peer that connects, and what it does with a share; `Node`
// routes inputs to them and carries out what they decide.

/// Validated shares of one configuration gathered from its members.
struct ShareCollector: Sendable {
    let configuration: Configuration
    /// Keyed by sender; each was checked against the sender's digest.
    var shares: [PlatformId: Share] = [:]

    init(configuration: Configuration) { self.configuration = configuration }

    var epoch: Epoch { configuration.epoch }

    var isComplete: Bool { shares.count >= configuration.threshold }

    /// Exactly K shares, in x order, so that the result never depends on
    /// dictionary order.
    var orderedShares: [Share] {
        Array(shares.values.sorted { $0.x < $1.x }.prefix(configuration.threshold))
    }

    /// What to ask `peer` for: its share, if it is a member whose share is missing.
    func request(for peer: PlatformId) -> Message.Kind? {
        configuration.members[peer] != nil && shares[peer] == nil ? .getShare(epoch) : nil
    }

    /// Keeps `share` from `peer` if it is of this collector's epoch (the
    /// node checked it against the digest); returns whether it was.
    mutating func add(_ share: Share, of epoch: Epoch, from peer: PlatformId) -> Bool {
        guard epoch == self.epoch else { return false }
        shares[peer] = share
        return true
    }

    /// The configuration's rack secret, from K of the gathered shares.
    func combine() throws(SecretSharingError) -> RackSecret {
        let combined = try Shamir.combine(orderedShares, threshold: configuration.threshold)
        guard let secret = RackSecret(combined) else { throw SecretSharingError.emptySecret }
        return secret
    }
}

/// A sub-machine that gathers the shares of one configuration's members.
protocol GathersShares {
    var collector: ShareCollector { get }
}

extension GathersShares {
    var epoch: Epoch { collector.epoch }

    /// What to ask `peer` for when it connects.
    func request(for peer: PlatformId) -> Message.Kind? { collector.request(for: peer) }
}

/// What a sub-machine made of a share it was given.
enum ShareProgress<Result> {
    /// Not for this sub-machine (another epoch).
    case ignored
    /// Kept; more are needed.
    case collecting
    /// The last share needed: here is the result.
    case finished(Result)
}

/// Computing this node's share of a configuration it committed without
/// having prepared it: K shares of that epoch, then its own at its
/// x-coordinate, checked against its digest.
struct ShareComputation: GathersShares, Sendable {
    var collector: ShareCollector
    /// This node, a member of the configuration.
    let platformId: PlatformId

    init(configuration: Configuration, platformId: PlatformId) {
        collector = ShareCollector(configuration: configuration)
        self.platformId = platformId
    }

    /// The computed share, or why it could not be computed.
    mutating func received(
        _ share: Share, of epoch: Epoch, from peer: PlatformId
    ) -> ShareProgress<Swift.Result<Share, ShareComputationFailure>> {
        guard collector.add(share, of: epoch, from: peer) else { return .ignored }
        guard collector.isComplete else { return .collecting }
        let config = collector.configuration
        // A computation is only started for configurations listing this node.
        let x = config.xCoordinate(of: platformId)!
        do {
            let own = try Shamir.recompute(at: x, from: collector.orderedShares, threshold: config.threshold)
            guard config.validates(own, from: platformId) else {
                return .finished(.failure(ShareComputationFailure("the computed share does not match our digest")))
            }
            return .finished(.success(own))
        } catch {
            return .finished(.failure(ShareComputationFailure("\(error)")))
        }
    }
}

/// Why a share could not be computed (the reason of an alarm).
struct ShareComputationFailure: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// Loading the rack secret of the latest committed epoch: this node's share
/// and K − 1 of its peers', combined.
struct RackSecretLoader: GathersShares, Sendable {
    var collector: ShareCollector

    init(configuration: Configuration, ownShare: Share, platformId: PlatformId) {
        collector = ShareCollector(configuration: configuration)
        collector.shares[platformId] = ownShare
    }

    /// The rack secret, or why the shares did not combine.
    mutating func received(
        _ share: Share, of epoch: Epoch, from peer: PlatformId
    ) -> ShareProgress<Swift.Result<RackSecret, SecretSharingError>> {
        guard collector.add(share, of: epoch, from: peer) else { return .ignored }
        guard collector.isComplete else { return .collecting }
        return .finished(Swift.Result { () throws(SecretSharingError) in try collector.combine() })
    }
}

/// A reconfiguration this node coordinates.
struct Coordinator: Sendable {
    let request: ValidatedReconfigureRequest
    /// The operator's ticket for it, sent with every `Prepare`.
    let ticket: SignedTicket
    var phase: Phase

    enum Phase: Sendable {
        /// Gathering K shares of the last committed epoch.
        case collectingShares(CollectingShares)
        /// Upgrading from LRTQ: gathering K LRTQ shares.
        case collectingLrtqShares(CollectingLrtqShares)
        /// The new configuration is built; waiting for acknowledgements.
        case preparing(Preparing)
    }

    /// What to send `peer` when it connects: a share request while
    /// collecting, its `Prepare` until it acknowledged.
    func request(for peer: PlatformId) -> Message.Kind? {
        switch phase {
        case .collectingShares(let collecting):
            return collecting.collector.request(for: peer)
        case .collectingLrtqShares(let collecting):
            return request.members.contains(peer) ? collecting.collector.request(for: peer) : nil
        case .preparing(let preparing):
            guard let share = preparing.shares[peer], !preparing.acked.contains(peer) else { return nil }
            return .prepare(preparing.configuration, share, ticket)
        }
    }

    /// A share of the last committed epoch (checked against its digest):
    /// the collected phase once there are K.
    mutating func received(_ share: Share, of epoch: Epoch, from peer: PlatformId) -> ShareProgress<CollectingShares> {
        guard case .collectingShares(var collecting) = phase,
            collecting.collector.add(share, of: epoch, from: peer)
        else { return .ignored }
        phase = .collectingShares(collecting)
        return collecting.collector.isComplete ? .finished(collecting) : .collecting
    }

    /// An LRTQ share: whether it was rejected, and the collected phase once there are K.
    mutating func receivedLrtqShare(
        _ share: Share, from peer: PlatformId, lrtq: LrtqState
    ) -> (rejected: Bool, progress: ShareProgress<CollectingLrtqShares>) {
        guard case .collectingLrtqShares(var collecting) = phase else { return (false, .ignored) }
        let rejected = collecting.collector.add(share, from: peer, lrtq: lrtq) == .rejected
        phase = .collectingLrtqShares(collecting)
        return (rejected, collecting.collector.isComplete ? .finished(collecting) : .collecting)
    }

    /// A member acknowledged the `Prepare` of `epoch`.
    mutating func receivedAck(of epoch: Epoch, from peer: PlatformId) {
        guard case .preparing(var preparing) = phase, preparing.configuration.epoch == epoch,
            preparing.configuration.members[peer] != nil
        else { return }
        preparing.acked.insert(peer)
        phase = .preparing(preparing)
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
