/// A message a node wants sent.
public struct OutgoingMessage: Sendable, Equatable, CustomStringConvertible {
    /// The peer to send it to.
    public let to: PlatformId
    /// The message.
    public let message: Message

    /// A message for `to`.
    public init(to: PlatformId, message: Message) {
        self.to = to
        self.message = message
    }

    public var description: String { "\(message) → \(to)" }
}

/// What a node asks its caller to do after an input. Drain it with
/// ``Node/drainOutput()`` after every input.
///
/// Order matters: if ``persistentStateChanged`` is set, the caller writes
/// ``Node/persistentState`` durably **before** sending ``messages``, so that
/// an acknowledgement never runs ahead of what is on disk.
public struct NodeOutput: Sendable, Equatable {
    /// Messages to send, in order.
    public var messages: [OutgoingMessage] = []
    /// Whether ``Node/persistentState`` must be written before sending.
    public var persistentStateChanged = false
    /// Alarms raised.
    public var alarms: [Alarm] = []
    /// Warnings for the operator's log (not invariant violations).
    public var warnings: [NodeWarning] = []
    /// Peer messages refused, never acted on: for the log, with the sender.
    public var refusals: [RefusedMessage] = []

    /// Nothing to do.
    public init() {}

    /// Whether there is nothing to do.
    public var isEmpty: Bool {
        messages.isEmpty && !persistentStateChanged && alarms.isEmpty && warnings.isEmpty && refusals.isEmpty
    }
}

/// A peer's message a node refused for what it asks (an unsigned or forged
/// decision, an epoch beyond reach): the sender, the message's kind and
/// epoch, and why. Never contains a share.
public struct RefusedMessage: Sendable, Equatable, CustomStringConvertible {
    /// The sender, as its channel authenticated it.
    public let from: PlatformId
    /// The message, by kind and epoch (``Message/description``).
    public let message: String
    /// Why it was refused.
    public let reason: String

    /// A refusal from its parts.
    public init(from: PlatformId, message: String, reason: String) {
        self.from = from
        self.message = message
        self.reason = reason
    }

    public var description: String { "\(message) from \(from) refused: \(reason)" }
}

/// Something the caller should log for the operator. Unlike an ``Alarm``, a
/// warning is not an invariant violation.
public enum NodeWarning: Sendable, Equatable, CustomStringConvertible {
    /// The deprecated legacy trust quorum (LRTQ) was used; the rack should be
    /// upgraded with ``Node/upgradeFromLrtq(_:using:)``.
    case lrtqDeprecated(LrtqUse)

    /// How LRTQ was used.
    public enum LrtqUse: String, Sendable, Equatable {
        /// The node started with LRTQ state and no trust-quorum configuration.
        case started
        /// The node began gathering LRTQ shares to unlock.
        case unlocking
        /// The node answered a peer's `GetLrtqShare`.
        case answeredShareRequest
        /// The node handed a spare LRTQ share to a node being added.
        case handedOutSpareShare
        /// The node began coordinating the upgrade to the trust quorum.
        case upgrading
    }

    public var description: String {
        switch self {
        case .lrtqDeprecated(let use):
            return "LRTQ is deprecated (\(use.rawValue)): upgrade this rack to the trust quorum"
        }
    }
}

/// What a coordinator reports to the control plane when polled.
public struct CoordinatorStatus: Sendable, Equatable {
    /// The epoch being coordinated.
    public let epoch: Epoch
    /// The new configuration, once built (`nil` while the shares of the last
    /// committed epoch are being collected).
    public let configuration: Configuration?
    /// The members that acknowledged the `Prepare` (the coordinator included).
    public let acked: Set<PlatformId>

    /// A status from its parts.
    public init(epoch: Epoch, configuration: Configuration?, acked: Set<PlatformId>) {
        self.epoch = epoch
        self.configuration = configuration
        self.acked = acked
    }
}

/// Why a `commit` or `prepareAndCommit` from the control plane was refused.
public struct CommitError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// `commit(epoch)` for an epoch this node has not prepared: the
        /// control plane should send `prepareAndCommit` instead.
        case notPrepared = "TQ-COMMIT-NOT-PREPARED"
        /// The configuration does not list this node.
        case notMember = "TQ-COMMIT-NOT-MEMBER"
        /// The configuration is for another rack.
        case rackIdMismatch = "TQ-COMMIT-RACK-ID"
        /// This node holds a different configuration for the epoch (an alarm was raised).
        case mismatchedConfiguration = "TQ-COMMIT-MISMATCH"
        /// This node was expunged.
        case expunged = "TQ-COMMIT-EXPUNGED"
        /// The commit signature does not verify under the pinned operator CA.
        case unsigned = "TQ-COMMIT-UNSIGNED"
        /// Told it was removed by a configuration that lists it.
        case stillMember = "TQ-COMMIT-STILL-MEMBER"
    }

    /// The rule that was broken.
    public let code: Code
    /// The epoch concerned.
    public let epoch: Epoch

    public var description: String { "\(code.rawValue): epoch \(epoch)" }
}

/// Why a node refused a ``SignedAction``.
public enum ActionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A ticket was refused.
    case reconfigure(ReconfigureError)
    /// A commit was refused.
    case commit(CommitError)

    /// The stable code (`TQ-RECONF-…` or `TQ-COMMIT-…`).
    public var code: String {
        switch self {
        case .reconfigure(let error): return error.code.rawValue
        case .commit(let error): return error.code.rawValue
        }
    }

    /// A sentence for people.
    public var reason: String {
        switch self {
        case .reconfigure(let error): return error.reason
        case .commit(let error): return error.description
        }
    }

    public var description: String {
        switch self {
        case .reconfigure(let error): return error.description
        case .commit(let error): return error.description
        }
    }
}

/// Why `loadRackSecret` cannot return a secret (as opposed to "not yet").
public struct LoadRackSecretError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// The node has not committed any configuration.
        case noCommittedConfiguration = "TQ-LOAD-NO-COMMITTED"
        /// The epoch is newer than the node's latest committed epoch.
        case notCommitted = "TQ-LOAD-NOT-COMMITTED"
        /// The epoch is older than the latest committed one and not in its
        /// chain (it was never committed, or predates the rack).
        case unavailable = "TQ-LOAD-UNAVAILABLE"
        /// Reconstruction or decryption failed; an alarm was raised.
        case failed = "TQ-LOAD-FAILED"
        /// This node was expunged.
        case expunged = "TQ-LOAD-EXPUNGED"
    }

    /// What went wrong.
    public let code: Code
    /// The epoch asked for.
    public let epoch: Epoch

    public var description: String { "\(code.rawValue): epoch \(epoch)" }
}

/// Tunables of a node.
public struct NodeOptions: Sendable, Equatable {
    /// The largest N a reconfiguration may ask for: 32 by default, at most 255.
    public var maximumMembers: Int

    /// Options with the production default of 32 members at most.
    public init(maximumMembers: Int = 32) {
        precondition((3...255).contains(maximumMembers), "maximumMembers must be 3…255")
        self.maximumMembers = maximumMembers
    }
}
