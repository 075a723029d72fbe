/// A violated invariant, recorded instead of crashing the node.
///
/// Each case is impossible in a correct protocol run; its documentation says
/// why. An alarm means a bug, corrupted storage or a lying peer got past the
/// checks, and it is surfaced to the operator.
public enum Alarm: Sendable, Equatable, CustomStringConvertible {
    /// Two different configurations for one epoch.
    ///
    /// Impossible because the control plane never reuses an epoch and each
    /// epoch has exactly one coordinator, which builds its configuration once
    /// and persists it before sending it.
    case mismatchedConfigurations(epoch: Epoch, from: PlatformId)

    /// K shares that each matched its digest did not yield a share matching
    /// this node's digest.
    ///
    /// Impossible because every input share was checked against the digest
    /// the coordinator computed from the same polynomial, and interpolation
    /// through K points of a degree K−1 polynomial is exact.
    case shareComputationFailed(epoch: Epoch, reason: String)

    /// The node was asked to act on an epoch it has committed, but the
    /// configuration of that epoch is missing from its persistent state.
    ///
    /// Impossible because a node persists a configuration before (or in the
    /// same write as) committing it and only prunes configurations older than
    /// its latest committed one.
    case committedConfigurationLost(epoch: Epoch)

    /// The encrypted chain of earlier secrets did not decrypt under the
    /// rebuilt secret.
    ///
    /// Impossible because the secret was rebuilt from shares matching the
    /// digests in the same configuration whose coordinator encrypted the
    /// chain under that secret.
    case rackSecretDecryptionFailed(epoch: Epoch)

    /// Combining K validated shares failed.
    ///
    /// Impossible because validated shares have distinct x-coordinates, equal
    /// lengths and lie on one polynomial.
    case rackSecretReconstructionFailed(epoch: Epoch, reason: String)

    /// A stable name for the alarm's kind.
    public var name: String {
        switch self {
        case .mismatchedConfigurations: return "MismatchedConfigurations"
        case .shareComputationFailed: return "ShareComputationFailed"
        case .committedConfigurationLost: return "CommittedConfigurationLost"
        case .rackSecretDecryptionFailed: return "RackSecretDecryptionFailed"
        case .rackSecretReconstructionFailed: return "RackSecretReconstructionFailed"
        }
    }

    public var description: String {
        switch self {
        case .mismatchedConfigurations(let epoch, let from):
            return "\(name)(epoch: \(epoch), from: \(from))"
        case .shareComputationFailed(let epoch, let reason):
            return "\(name)(epoch: \(epoch), \(reason))"
        case .committedConfigurationLost(let epoch):
            return "\(name)(epoch: \(epoch))"
        case .rackSecretDecryptionFailed(let epoch):
            return "\(name)(epoch: \(epoch))"
        case .rackSecretReconstructionFailed(let epoch, let reason):
            return "\(name)(epoch: \(epoch), \(reason))"
        }
    }
}
