import KeyrackCore
import SecretSharing

/// A message between two nodes of the same rack.
///
/// The sender is not in the message: it is the platform id the channel
/// authenticated. A message whose ``rackId`` is not the receiver's is dropped.
public struct Message: Sendable, Equatable, CustomStringConvertible {
    /// The rack the sender belongs to.
    public let rackId: RackId
    /// What the message says.
    public let kind: Kind

    /// A message for `rackId`.
    public init(rackId: RackId, kind: Kind) {
        self.rackId = rackId
        self.kind = kind
    }

    /// The messages of the protocol.
    public enum Kind: Sendable, Equatable {
        /// From the coordinator to a member of the new configuration: persist
        /// this configuration and your share of it, then acknowledge. The
        /// operator's signed ticket says who may coordinate which epoch.
        case prepare(Configuration, Share, SignedTicket)
        /// A member persisted the configuration of this epoch and its share.
        case prepareAck(Epoch)
        /// Send me your share of this epoch.
        case getShare(Epoch)
        /// The sender's share of this epoch.
        case share(Epoch, Share)
        /// You asked about an old epoch: here is the latest committed
        /// configuration with the operator's commit signature; commit it and
        /// compute your share.
        case commitAdvance(SignedConfiguration)
        /// You are not a member of this committed configuration (signed by the operator).
        case expunged(SignedConfiguration)
        /// Reserved for the legacy (LRTQ) mode: send me your LRTQ share.
        case getLrtqShare
        /// Reserved for the legacy (LRTQ) mode: the sender's LRTQ share.
        case lrtqShare(Share)
    }

    /// The kind's name, no contents (shares are never printed).
    public var description: String {
        switch kind {
        case .prepare(let config, _, _): return "Prepare(epoch: \(config.epoch))"
        case .prepareAck(let epoch): return "PrepareAck(epoch: \(epoch))"
        case .getShare(let epoch): return "GetShare(epoch: \(epoch))"
        case .share(let epoch, _): return "Share(epoch: \(epoch))"
        case .commitAdvance(let signed): return "CommitAdvance(epoch: \(signed.epoch))"
        case .expunged(let signed): return "Expunged(epoch: \(signed.epoch))"
        case .getLrtqShare: return "GetLrtqShare"
        case .lrtqShare: return "LrtqShare"
        }
    }
}
