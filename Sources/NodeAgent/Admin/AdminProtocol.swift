import Foundation
import TrustQuorum

/// A request on the admin socket: one length-prefixed JSON frame per
/// connection, answered by one ``AdminResponse`` frame.
public struct AdminRequest: Codable, Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What is asked.
    public enum Operation: String, Codable, Sendable {
        /// The node's ``NodeStatus``.
        case status
        /// Coordinate the reconfiguration of an operator-signed ``ticket``.
        case reconfigure
        /// Commit a prepared epoch (``epoch``) under the operator's commit ``signature``.
        case commit
        /// Commit a configuration this node may not have prepared (``configuration``, ``signature``).
        case prepareAndCommit
        /// This node was removed: ``configuration``, the committed configuration that leaves it out, and its ``signature``.
        case expunge
        /// Learn where peers listen (``peers``: platform id → host:port).
        case setPeers
        /// A disk's key (``disk``, and ``epoch`` or the latest committed one).
        case diskKey
        /// The operator re-keyed ``disk`` to ``epoch`` (a committed epoch, not
        /// older than the one it was keyed under); re-keying is reported from there on.
        /// Refused for a bound LUKS2 volume: the node re-keys those itself.
        case diskRekeyed
        /// Enroll the latest epoch's key of LUKS2 volume ``disk`` authorised by ``existingKey``.
        case luksBind
        /// Write a new LUKS2 header on the empty device of ``disk`` (its only key: the latest epoch's).
        case luksFormat
        /// Check and put in force an operator-signed measurement policy
        /// (``policy``; with ``dryRun``, only check it). Answered with ``AdminResponse/policy``.
        case setPolicy
    }

    /// What is asked.
    public var operation: Operation
    /// For ``Operation/reconfigure``: the operator's signed ticket.
    public var ticket: SignedTicket?
    /// For ``Operation/commit``, ``Operation/diskKey`` and ``Operation/diskRekeyed``.
    public var epoch: Epoch?
    /// For ``Operation/prepareAndCommit``.
    public var configuration: Configuration?
    /// For ``Operation/commit`` and ``Operation/prepareAndCommit``: the operator's commit signature.
    public var signature: OperatorSignature?
    /// For ``Operation/setPeers``.
    public var peers: [String: String]?
    /// For ``Operation/diskKey``, ``Operation/diskRekeyed``, ``Operation/luksBind`` and ``Operation/luksFormat``.
    public var disk: String?
    /// For ``Operation/luksBind``: a key that opens the volume now (base64). Never printed.
    public var existingKey: String?
    /// For ``Operation/diskKey``: the derivation scheme (absent: the current,
    /// platform-bound one). ``DiskKeyScheme/diskOnly`` is answered only for a
    /// disk still keyed by an earlier release, to re-key it from.
    public var keyScheme: DiskKeyScheme?
    /// For ``Operation/setPolicy``: the signed policy.
    public var policy: SignedNodePolicy?
    /// For ``Operation/setPolicy``: check the policy as if applying it, change nothing.
    public var dryRun: Bool?

    /// A request for `operation` with its arguments.
    public init(
        _ operation: Operation,
        ticket: SignedTicket? = nil,
        epoch: Epoch? = nil,
        configuration: Configuration? = nil,
        signature: OperatorSignature? = nil,
        peers: [String: String]? = nil,
        disk: String? = nil,
        existingKey: String? = nil,
        keyScheme: DiskKeyScheme? = nil,
        policy: SignedNodePolicy? = nil,
        dryRun: Bool? = nil
    ) {
        self.operation = operation
        self.ticket = ticket
        self.epoch = epoch
        self.configuration = configuration
        self.signature = signature
        self.peers = peers
        self.disk = disk
        self.existingKey = existingKey
        self.keyScheme = keyScheme
        self.policy = policy
        self.dryRun = dryRun
    }

    public var description: String {
        "AdminRequest(\(operation.rawValue)\(disk.map { ", disk \($0)" } ?? "")\(existingKey == nil ? "" : ", key redacted"))"
    }
    public var debugDescription: String { description }
}

/// The answer to an ``AdminRequest``. Printing it never shows a disk key.
public struct AdminResponse: Codable, Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Set when the request failed: a stable code and a sentence.
    public var error: AdminError?
    /// For ``AdminRequest/Operation/status``.
    public var status: NodeStatus?
    /// For ``AdminRequest/Operation/diskKey``: the key in hex.
    public var key: String?
    /// For ``AdminRequest/Operation/diskKey``: the epoch the key belongs to.
    public var keyEpoch: Epoch?
    /// For ``AdminRequest/Operation/luksBind`` and ``AdminRequest/Operation/luksFormat``: the volume afterwards.
    public var volume: VolumeStatus?
    /// For ``AdminRequest/Operation/setPolicy``: the policy in force afterwards (or, for a dry run, what it would be).
    public var policy: NodePolicyState?

    /// A response from its parts.
    public init(
        error: AdminError? = nil, status: NodeStatus? = nil, key: String? = nil, keyEpoch: Epoch? = nil,
        volume: VolumeStatus? = nil, policy: NodePolicyState? = nil
    ) {
        self.error = error
        self.status = status
        self.key = key
        self.keyEpoch = keyEpoch
        self.volume = volume
        self.policy = policy
    }

    public var description: String {
        if let error { return "AdminResponse(error: \(error))" }
        if key != nil { return "AdminResponse(disk key\(keyEpoch.map { " of epoch \($0)" } ?? ""), redacted)" }
        if let status { return "AdminResponse(status of \(status.platform))" }
        return "AdminResponse(ok)"
    }
    public var debugDescription: String { description }
}

/// A refused admin request, shaped like swift-certificates' errors: a
/// stable ``code`` that callers match on (equality and hashing look at the
/// code only) and a ``reason`` for people. It travels on the admin socket as
/// `{"code": "NODE-…", "reason": "…"}`.
public struct AdminError: Error, Codable, Sendable, Hashable, CustomStringConvertible {
    /// A stable code: the agent's (`NODE-…`, the constants below) or the
    /// trust quorum's (`TQ-…`, passed through from the state machine).
    /// Extensible: a code a newer node sends decodes as itself.
    public struct Code: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(from decoder: any Decoder) throws {
            rawValue = try decoder.singleValueContainer().decode(String.self)
        }
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(rawValue)
        }
        public var description: String { rawValue }

        /// The request is malformed or lacks an argument.
        public static let request = Code(rawValue: "NODE-ADMIN-REQUEST")
        /// The node could not write its ledger and stopped taking part until restarted.
        public static let halted = Code(rawValue: "NODE-HALTED")
        /// The node is stopping.
        public static let stopping = Code(rawValue: "NODE-STOPPING")
        /// The agent state (`agent.sealed`) could not be written; nothing was recorded.
        public static let stateWrite = Code(rawValue: "NODE-STATE-WRITE")
        /// The disk is not one of the node's.
        public static let diskUnknown = Code(rawValue: "NODE-DISK-UNKNOWN")
        /// The node was removed from the rack.
        public static let expunged = Code(rawValue: "NODE-EXPUNGED")
        /// The node has committed no configuration.
        public static let notCommitted = Code(rawValue: "NODE-NOT-COMMITTED")
        /// The rack secret is not loaded yet.
        public static let locked = Code(rawValue: "NODE-LOCKED")
        /// The admin socket cannot be set up.
        public static let socket = Code(rawValue: "NODE-ADMIN-SOCKET")
        /// The node does not answer.
        public static let unreachable = Code(rawValue: "NODE-UNREACHABLE")
        /// The node answered something unreadable.
        public static let response = Code(rawValue: "NODE-ADMIN-RESPONSE")
        /// The caller may not ask this (over the network: a disk key, unless the configuration allows it).
        public static let forbidden = Code(rawValue: "NODE-ADMIN-FORBIDDEN")
        /// The node's TLS identity or the operator's credentials are unusable, or a
        /// node's certificate does not match what it reports.
        public static let authentication = Code(rawValue: "NODE-ADMIN-AUTHENTICATION")
        /// An operator-signed measurement policy was refused: another rack's, a
        /// signature that does not verify, an older version, one that cannot be
        /// used here or that would refuse this node's own software.
        public static let policyRefused = Code(rawValue: "NODE-POLICY-REFUSED")

        /// A trust-quorum code (`CommitError.Code`, `ReconfigureError.Code`,
        /// `LoadRackSecretError.Code`), passed through.
        public init<TrustQuorumCode: RawRepresentable<String>>(_ code: TrustQuorumCode) {
            self.init(rawValue: code.rawValue)
        }
    }

    /// What went wrong.
    public var code: Code
    /// What went wrong, for people.
    public var reason: String

    /// An error from its parts.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// An error from a code's text (a test or a peer's code).
    public init(code: String, reason: String) {
        self.init(Code(rawValue: code), reason)
    }

    public var description: String { "\(code): \(reason)" }
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

/// What a node reports about itself.
public struct NodeStatus: Codable, Sendable, Equatable {
    /// The node's platform id.
    public var platform: PlatformId
    /// Its rack.
    public var rackId: RackId
    /// Where it listens for peers.
    public var listen: String
    /// The latest configuration it committed.
    public var latestCommitted: Configuration?
    /// The operator's commit signature of ``latestCommitted`` (`nil` for a
    /// commit recorded before signatures): the operator resumes only from
    /// a configuration whose signature it verifies.
    public var commitSignature: OperatorSignature?
    /// The highest epoch it has seen.
    public var highestEpochSeen: Epoch?
    /// The epoch whose rack secret it has loaded (its disks can open).
    public var unlockedEpoch: Epoch?
    /// The check value of that rack secret (``KeyDerivation/checkValue(secret:rackId:epoch:)``,
    /// hex): equal on every member that loaded the same secret.
    public var secretCheck: String?
    /// The epoch whose share it is computing (it committed without preparing).
    public var computingShareEpoch: Epoch?
    /// What it is coordinating, if anything.
    public var coordinating: CoordinatorReport?
    /// Set once it learnt it was removed from the rack.
    public var expunged: ExpungedMetadata?
    /// Alarms raised (kept across restarts, the latest 100).
    public var alarms: [String]
    /// Peers with an attested channel up.
    public var connected: [PlatformId]
    /// Disks keyed under an older epoch than the latest committed, from the
    /// epoch each is keyed under (until the operator reports it re-keyed).
    public var rekey: [DiskRekey]
    /// The LUKS2 volumes of its configuration: opened, verified, being re-keyed, or why not.
    public var volumes: [VolumeStatus]
    /// Ledger copies that could not be used at start.
    public var ledgerProblems: [String]
    /// Whether peers' evidence is enforced (`false`: permissive development mode).
    public var attestationEnforced: Bool
    /// Peer messages refused since the node started: shares that fail their
    /// digest or come from a non-member, decisions whose operator signature
    /// does not verify, and requests beyond reach of the latest commit
    /// (never acted on).
    public var rejected: Int
    /// What the node counted since it started: failed handshakes, dials and
    /// attestations by reason, ledger writes (absent from earlier releases).
    public var counters: NodeCounters? = nil
    /// The measurement policy peers are appraised against: the policy file,
    /// or an operator-signed version (absent from earlier releases).
    public var policy: NodePolicyState? = nil

    /// The latest committed epoch.
    public var committedEpoch: Epoch? { latestCommitted?.epoch }

    /// ``latestCommitted`` with its commit signature, when it has one.
    public var signedCommitted: SignedConfiguration? {
        guard let latestCommitted, let commitSignature else { return nil }
        return SignedConfiguration(latestCommitted, signature: commitSignature)
    }
}

/// A coordinator's progress.
public struct CoordinatorReport: Codable, Sendable, Equatable {
    /// The epoch being coordinated.
    public var epoch: Epoch
    /// The new configuration once built.
    public var configuration: Configuration?
    /// The members that acknowledged the `Prepare`.
    public var acked: [PlatformId]

    /// The status the control plane consumes.
    public var coordinatorStatus: CoordinatorStatus {
        CoordinatorStatus(epoch: epoch, configuration: configuration, acked: Set(acked))
    }
}

/// A disk whose data is keyed under an older epoch than the latest committed.
public struct DiskRekey: Codable, Sendable, Equatable {
    /// The disk id.
    public var disk: String
    /// The epoch its data is keyed under.
    public var from: Epoch
    /// The epoch to re-key it to.
    public var to: Epoch
    /// The scheme of the key it is keyed under (``DiskKeyScheme/diskOnly``:
    /// keyed by an earlier release; `keyrack node disk-key --key-scheme 1`
    /// gives that key until the re-key is reported).
    public var fromScheme: DiskKeyScheme
    /// The scheme of the key to re-key it to.
    public var toScheme: DiskKeyScheme

    /// A re-key of `disk` from key `from` to key `to`.
    public init(disk: String, from: DiskKeyVersion, to: DiskKeyVersion) {
        self.disk = disk
        self.from = from.epoch
        self.to = to.epoch
        fromScheme = from.scheme
        toScheme = to.scheme
    }

    /// The key it is keyed under.
    public var fromKey: DiskKeyVersion { DiskKeyVersion(from, fromScheme) }
    /// The key to re-key it to.
    public var toKey: DiskKeyVersion { DiskKeyVersion(to, toScheme) }

    /// `data0 1→3`; a key of an earlier scheme is marked: `data0 3(v1)→3`.
    public var summary: String {
        func label(_ key: DiskKeyVersion) -> String {
            key.scheme == .current ? "\(key.epoch)" : "\(key.epoch)(\(key.scheme))"
        }
        return "\(disk) \(label(fromKey))→\(label(toKey))"
    }

    private enum CodingKeys: String, CodingKey { case disk, from, to, fromScheme, toScheme }

    /// Decodes one, also from a node of an earlier release (no schemes: disk-only keys).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let move = try container.decodeMove(disk: .disk, from: (.from, .fromScheme), to: (.to, .toScheme))
        (disk, from, fromScheme, to, toScheme) = (
            move.disk, move.from.epoch, move.from.scheme, move.to.epoch, move.to.scheme
        )
    }
}
