import KeyrackCore
import SecretSharing

/// What a node keeps on disk. The caller persists it, atomically, whenever a
/// node's output says it changed, and before sending that output's messages.
///
/// Encoded with `Codable` under a version number; the ledger around it
/// (generation numbers, two locations, write–fsync–rename) belongs to the
/// node agent. Shares are stored in the clear here: at rest they are
/// encrypted under a key held by the root of trust.
public struct PersistentState: Sendable, Equatable, Codable {
    /// The version this code writes. Version 2 added the operator's
    /// signatures (``commitSignatures``, ``tickets``); a version-1 state
    /// still loads, its commits unsigned (it can unlock, and the next signed
    /// commit replaces them, but it hands no `CommitAdvance` to a peer).
    public static let currentVersion = 2

    /// The legacy (LRTQ) state: the node's LRTQ share, its spare shares and
    /// the digests of all 255 LRTQ shares. `nil` for a node that never was in
    /// LRTQ, and dropped at the first committed trust-quorum configuration.
    public var lrtq: LrtqState?
    /// The configurations this node knows, by epoch (the latest committed one
    /// and any prepared after it; older ones are pruned on commit).
    public var configurations: [Epoch: Configuration]
    /// This node's shares, by epoch (pruned like the configurations).
    public var shares: [Epoch: Share]
    /// Every epoch this node has committed.
    public var committedEpochs: Set<Epoch> {
        didSet { latestCommittedEpoch = committedEpochs.max() }
    }
    /// The highest committed epoch (kept up to date with ``committedEpochs``).
    public private(set) var latestCommittedEpoch: Epoch?
    /// Set once the node learns it was removed; it then ignores everything.
    public var expunged: ExpungedMetadata?
    /// The operator's commit signature of each committed configuration held
    /// (pruned with the configurations).
    public var commitSignatures: [Epoch: OperatorSignature] = [:]
    /// The signed ticket each prepared configuration was prepared under
    /// (pruned with the configurations).
    public var tickets: [Epoch: SignedTicket] = [:]

    /// A node that has never been part of a configuration.
    public static let empty = PersistentState(
        lrtq: nil,
        configurations: [:],
        shares: [:],
        committedEpochs: [],
        expunged: nil
    )

    /// A state from its parts.
    public init(
        lrtq: LrtqState?,
        configurations: [Epoch: Configuration],
        shares: [Epoch: Share],
        committedEpochs: Set<Epoch>,
        expunged: ExpungedMetadata?
    ) {
        self.lrtq = lrtq
        self.configurations = configurations
        self.shares = shares
        self.committedEpochs = committedEpochs
        self.latestCommittedEpoch = committedEpochs.max()
        self.expunged = expunged
    }

    /// The configuration of the highest committed epoch.
    public var latestCommittedConfiguration: Configuration? {
        latestCommittedEpoch.flatMap { configurations[$0] }
    }

    /// The highest committed configuration with its commit signature, if
    /// this node holds one (a state written before signatures has none).
    public var latestSignedConfiguration: SignedConfiguration? {
        guard let epoch = latestCommittedEpoch, let config = configurations[epoch],
            let signature = commitSignatures[epoch]
        else { return nil }
        return SignedConfiguration(config, signature: signature)
    }

    /// The prepared configuration above the latest commit and the ticket it
    /// was prepared under, if any.
    public var preparedUnderTicket: (Configuration, SignedTicket)? {
        let floor = latestCommittedEpoch
        for (epoch, ticket) in tickets where floor.map({ epoch > $0 }) ?? true {
            if let config = configurations[epoch] { return (config, ticket) }
        }
        return nil
    }

    /// Drops configurations, shares, signatures and tickets of epochs below `epoch`.
    mutating func prune(below epoch: Epoch) {
        for old in configurations.keys where old < epoch { configurations[old] = nil }
        for old in shares.keys where old < epoch { shares[old] = nil }
        for old in commitSignatures.keys where old < epoch { commitSignatures[old] = nil }
        for old in tickets.keys where old < epoch { tickets[old] = nil }
    }

    /// The highest epoch this node has any configuration for.
    public var latestKnownEpoch: Epoch? {
        [configurations.keys.max(), latestCommittedEpoch].compactMap { $0 }.max()
    }

    /// Records `config` as prepared with this node's `share`, dropping any
    /// other prepared configuration above the latest commit: at most one is
    /// kept, so a stream of `Prepare`s at rising epochs cannot grow the
    /// ledger. (A newer reconfiguration abandons the older one; the control
    /// plane never commits an epoch it has moved past.)
    mutating func keepOnlyPrepared(_ config: Configuration, share: Share, ticket: SignedTicket) {
        let floor = latestCommittedEpoch
        for epoch in configurations.keys where epoch != config.epoch && floor.map({ epoch > $0 }) ?? true {
            configurations[epoch] = nil
            shares[epoch] = nil
        }
        for epoch in tickets.keys where epoch != config.epoch && floor.map({ epoch > $0 }) ?? true {
            tickets[epoch] = nil
        }
        configurations[config.epoch] = config
        shares[config.epoch] = share
        tickets[config.epoch] = ticket
    }

    /// Whether this node holds its share of `epoch` (it prepared, or computed it).
    public func hasPrepared(_ epoch: Epoch) -> Bool {
        configurations[epoch] != nil && shares[epoch] != nil
    }

    // MARK: Codable

    private enum CodingKeys: String, CodingKey {
        case version
        case lrtq
        case configurations
        case shares
        case committedEpochs
        case expunged
        case commitSignatures
        case tickets
    }

    private struct StoredSignature: Codable {
        var epoch: Epoch
        var signature: OperatorSignature
    }

    private struct StoredShare: Codable {
        var epoch: Epoch
        var x: UInt8
        var y: String
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let version = try container.decode(Int.self, forKey: .version)
        guard version == Self.currentVersion || version == 1 else {
            throw DecodingError.dataCorruptedError(
                forKey: .version,
                in: container,
                debugDescription: "persistent state version \(version) is not supported"
            )
        }
        lrtq = try container.decodeIfPresent(LrtqState.self, forKey: .lrtq)
        let configList = try container.decode([Configuration].self, forKey: .configurations)
        configurations = Dictionary(configList.map { ($0.epoch, $0) }, uniquingKeysWith: { first, _ in first })
        var shares: [Epoch: Share] = [:]
        for stored in try container.decode([StoredShare].self, forKey: .shares) {
            guard let y = SecretBytes(hex: stored.y), let share = try? Share(x: stored.x, y: y) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .shares,
                    in: container,
                    debugDescription: "a stored share is malformed"
                )
            }
            shares[stored.epoch] = share
        }
        self.shares = shares
        committedEpochs = Set(try container.decode([Epoch].self, forKey: .committedEpochs))
        latestCommittedEpoch = committedEpochs.max()
        expunged = try container.decodeIfPresent(ExpungedMetadata.self, forKey: .expunged)
        guard version >= 2 else { return }
        for stored in try container.decode([StoredSignature].self, forKey: .commitSignatures) {
            commitSignatures[stored.epoch] = stored.signature
        }
        for ticket in try container.decode([SignedTicket].self, forKey: .tickets) {
            tickets[ticket.ticket.epoch] = ticket
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Self.currentVersion, forKey: .version)
        try container.encodeIfPresent(lrtq, forKey: .lrtq)
        try container.encode(configurations.keys.sorted().map { configurations[$0]! }, forKey: .configurations)
        let stored = shares.keys.sorted().map { epoch in
            let share = shares[epoch]!
            return StoredShare(epoch: epoch, x: share.x, y: share.y.withUnsafeBytes { $0.hexString })
        }
        try container.encode(stored, forKey: .shares)
        try container.encode(committedEpochs.sorted(), forKey: .committedEpochs)
        try container.encodeIfPresent(expunged, forKey: .expunged)
        try container.encode(
            commitSignatures.keys.sorted().map { StoredSignature(epoch: $0, signature: commitSignatures[$0]!) },
            forKey: .commitSignatures)
        try container.encode(tickets.keys.sorted().map { tickets[$0]! }, forKey: .tickets)
    }
}

/// Recorded when a node learns it is no longer a member.
public struct ExpungedMetadata: Sendable, Equatable, Codable {
    /// The epoch of the configuration that does not list this node.
    public let epoch: Epoch
    /// The peer that said so.
    public let from: PlatformId

    /// Metadata from the epoch and the peer.
    public init(epoch: Epoch, from: PlatformId) {
        self.epoch = epoch
        self.from = from
    }
}
