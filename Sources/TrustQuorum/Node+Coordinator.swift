import KeyrackCore
import SecretSharing

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
