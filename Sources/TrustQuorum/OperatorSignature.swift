import Crypto
import KeyrackCore

// The operator's signatures on control-plane decisions ("Trust: no single
// peer's word" in trust-quorum.md). A node coordinates only a signed ticket,
// prepares only under one, and commits only a configuration whose commit
// signature verifies, so no single peer can make it delete its share or
// adopt a secret the peer made up.

/// An operator's signature on one decision: the signer's credential (what
/// the verifier checks against what it pins: a DER certificate in the node
/// agent, a raw public key in the simulator) and the signature bytes.
public struct OperatorSignature: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Who signed: opaque here, judged by the ``DecisionVerifier``.
    public let credential: [UInt8]
    /// The signature over the decision's ``Decision/statement``.
    public let signature: [UInt8]

    /// The longest credential the wire carries (a certificate chain would not fit: one certificate does).
    public static let maximumCredentialLength = 4096
    /// The longest signature the wire carries.
    public static let maximumSignatureLength = 512

    /// A signature from its parts; `nil` if either is empty or too long.
    public init?(credential: [UInt8], signature: [UInt8]) {
        guard (1...Self.maximumCredentialLength).contains(credential.count),
            (1...Self.maximumSignatureLength).contains(signature.count)
        else { return nil }
        self.credential = credential
        self.signature = signature
    }

    public var description: String { "OperatorSignature(\(signature.count) bytes)" }

    private enum CodingKeys: String, CodingKey {
        case credential
        case signature
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        guard let credential = [UInt8](hex: try container.decode(String.self, forKey: .credential)),
            let signature = [UInt8](hex: try container.decode(String.self, forKey: .signature)),
            let value = OperatorSignature(credential: credential, signature: signature)
        else {
            throw DecodingError.dataCorruptedError(
                forKey: .signature, in: container,
                debugDescription: "a signature is a credential (1…4096 bytes) and a signature (1…512), in hex")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(credential.hexString, forKey: .credential)
        try container.encode(signature.hexString, forKey: .signature)
    }
}

/// What the operator asks one coordinator to do, as it signs it: the rack,
/// the epoch, the coordinator, the members, K and the last committed epoch
/// (`nil` for the initial setup and for the upgrade from LRTQ).
public struct ReconfigureTicket: Sendable, Hashable, Codable, CustomStringConvertible {
    /// What the ticket starts.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// A reconfiguration, or the initial setup.
        case reconfigure
        /// The upgrade of a legacy (LRTQ) rack.
        case upgradeFromLrtq
    }

    /// What the ticket starts.
    public let kind: Kind
    /// The rack.
    public let rackId: RackId
    /// The new epoch.
    public let epoch: Epoch
    /// The only node that may coordinate it.
    public let coordinator: PlatformId
    /// The members of the new configuration.
    public let members: Set<PlatformId>
    /// K.
    public let threshold: Int
    /// The epoch the operator last committed (`nil`: the initial setup, or the upgrade from LRTQ).
    public let lastCommittedEpoch: Epoch?

    /// The ticket for `request`, coordinated by `coordinator`.
    public init(_ request: ReconfigureRequest, coordinator: PlatformId) {
        kind = .reconfigure
        rackId = request.rackId
        epoch = request.epoch
        self.coordinator = coordinator
        members = request.members
        threshold = request.threshold
        lastCommittedEpoch = request.lastCommittedEpoch
    }

    /// The ticket for the upgrade `request`, coordinated by `coordinator`.
    public init(upgrade request: UpgradeFromLrtqRequest, coordinator: PlatformId) {
        kind = .upgradeFromLrtq
        rackId = request.rackId
        epoch = request.epoch
        self.coordinator = coordinator
        members = request.members
        threshold = request.threshold
        lastCommittedEpoch = nil
    }

    /// The reconfiguration request the ticket carries.
    public var request: ReconfigureRequest {
        ReconfigureRequest(
            rackId: rackId, epoch: epoch, lastCommittedEpoch: lastCommittedEpoch, members: members,
            threshold: threshold)
    }

    /// The upgrade request the ticket carries.
    public var upgradeRequest: UpgradeFromLrtqRequest {
        UpgradeFromLrtqRequest(rackId: rackId, epoch: epoch, members: members, threshold: threshold)
    }

    /// Whether `configuration` is what this ticket allows its coordinator to
    /// prepare: same rack, epoch, coordinator, members and K.
    public func allows(_ configuration: Configuration) -> Bool {
        configuration.rackId == rackId && configuration.epoch == epoch && configuration.coordinator == coordinator
            && configuration.threshold == threshold && Set(configuration.members.keys) == members
    }

    public var description: String {
        "Ticket(\(kind.rawValue), epoch: \(epoch), coordinator: \(coordinator), N: \(members.count), K: \(threshold))"
    }
}

/// One decision the operator signs.
public enum Decision: Sendable, Equatable, CustomStringConvertible {
    /// A reconfiguration ticket.
    case ticket(ReconfigureTicket)
    /// The commit of a configuration (its fingerprint is what is signed).
    case commit(Configuration)

    /// The epoch the decision is about.
    public var epoch: Epoch {
        switch self {
        case .ticket(let ticket): return ticket.epoch
        case .commit(let configuration): return configuration.epoch
        }
    }

    /// `ticket` or `commit`, as the operator's journal names decisions.
    public var kindName: String {
        switch self {
        case .ticket: return "ticket"
        case .commit: return "commit"
        }
    }

    /// The bytes signed: a domain-separation label, then the decision's
    /// fields in the wire encoding (a ticket: kind, rack id, epoch,
    /// coordinator, K, the last committed epoch if any, the members in
    /// order; a commit: rack id, epoch and the configuration's SHA-256
    /// fingerprint). A ticket's signature can never pass for a commit's.
    public var statement: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .ticket(let ticket):
            writer.write(Array("keyrack trust-quorum ticket v1".utf8))
            writer.write(ticket)
        case .commit(let configuration):
            writer.write(Array("keyrack trust-quorum commit v1".utf8))
            writer.write(configuration.rackId.bytes)
            writer.write(configuration.epoch.value)
            writer.write(configuration.fingerprint)
        }
        return writer.bytes
    }

    public var description: String {
        switch self {
        case .ticket(let ticket): return "\(ticket)"
        case .commit(let configuration): return "commit(epoch: \(configuration.epoch))"
        }
    }
}

/// A ticket with the operator's signature.
public struct SignedTicket: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The ticket.
    public let ticket: ReconfigureTicket
    /// The operator's signature over ``Decision/ticket(_:)``.
    public let signature: OperatorSignature

    /// A signed ticket from its parts (nothing is checked here).
    public init(_ ticket: ReconfigureTicket, signature: OperatorSignature) {
        self.ticket = ticket
        self.signature = signature
    }

    /// Whether the signature verifies under `verifier`.
    public func verifies(under verifier: any DecisionVerifier) -> Bool {
        verifier.verifies(signature, over: Decision.ticket(ticket).statement)
    }

    public var description: String { "Signed\(ticket)" }
}

/// A committed configuration with the operator's commit signature: what a
/// node hands a peer that is behind (`CommitAdvance`) or was removed
/// (`Expunged`), so the peer checks the operator's word, not the sender's.
public struct SignedConfiguration: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The configuration.
    public let configuration: Configuration
    /// The operator's signature over ``Decision/commit(_:)``.
    public let signature: OperatorSignature

    /// A signed configuration from its parts (nothing is checked here).
    public init(_ configuration: Configuration, signature: OperatorSignature) {
        self.configuration = configuration
        self.signature = signature
    }

    /// Whether the commit signature verifies under `verifier`.
    public func verifies(under verifier: any DecisionVerifier) -> Bool {
        verifier.verifies(signature, over: Decision.commit(configuration).statement)
    }

    /// The epoch.
    public var epoch: Epoch { configuration.epoch }

    public var description: String { "Signed\(configuration)" }
}

/// Judges operator signatures. A node is given one at start and checks every
/// ticket and commit with it; a verifier fails closed (anything it cannot
/// judge does not verify).
public protocol DecisionVerifier: Sendable {
    /// Whether `signature` is a valid operator signature over `statement`.
    func verifies(_ signature: OperatorSignature, over statement: [UInt8]) -> Bool
}

/// Why the operator did not sign.
public struct SigningError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stable code callers match on.
    public enum Code: String, Sendable, Equatable {
        /// A different decision of the same kind was signed for this epoch already (the journal says so).
        case conflicting = "TQ-SIGN-CONFLICT"
        /// The signing key or the journal cannot be used.
        case unavailable = "TQ-SIGN-UNAVAILABLE"
    }

    /// What went wrong.
    public let code: Code
    /// A sentence for people.
    public let reason: String

    /// An error from its parts.
    public init(code: Code, reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// Signs the operator's decisions. The node agent's signer keeps a journal
/// so that it never signs two different decisions of one kind for one epoch.
public protocol DecisionSigner: Sendable {
    /// The operator's signature over `decision`.
    func sign(_ decision: Decision) throws(SigningError) -> OperatorSignature
}

/// An Ed25519 operator key held in memory, whose credential is its raw
/// public key: what the simulator and the state-machine tests sign with.
/// The node agent signs with an operator certificate instead
/// (`OperatorIdentity`). It does not journal.
public struct RawOperatorKey: DecisionSigner, CustomStringConvertible {
    private let key: Curve25519.Signing.PrivateKey

    /// A key drawn from `random` (reproducible under a seeded source).
    public init(using random: inout some SecureRandomSource) {
        // 32 random bytes are a valid Ed25519 seed.
        key = try! Curve25519.Signing.PrivateKey(rawRepresentation: random.bytes(32))
    }

    /// The credential its signatures carry: the raw public key.
    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// A verifier that pins this key.
    public var verifier: PinnedOperatorKeys { PinnedOperatorKeys([publicKey]) }

    public func sign(_ decision: Decision) throws(SigningError) -> OperatorSignature {
        let signature: [UInt8]
        do {
            signature = Array(try key.signature(for: decision.statement))
        } catch {
            throw SigningError(code: .unavailable, reason: "Ed25519 signing failed")
        }
        return OperatorSignature(credential: publicKey, signature: signature)!
    }

    public var description: String { "RawOperatorKey(redacted)" }
}

/// Verifies signatures whose credential is one of the pinned raw Ed25519
/// public keys.
public struct PinnedOperatorKeys: DecisionVerifier {
    private let keys: [[UInt8]: Curve25519.Signing.PublicKey]

    /// A verifier trusting exactly `publicKeys` (raw 32-byte Ed25519 keys; others are ignored).
    public init(_ publicKeys: [[UInt8]]) {
        var keys: [[UInt8]: Curve25519.Signing.PublicKey] = [:]
        for raw in publicKeys {
            if let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) { keys[raw] = key }
        }
        self.keys = keys
    }

    public func verifies(_ signature: OperatorSignature, over statement: [UInt8]) -> Bool {
        guard let key = keys[signature.credential] else { return false }
        return key.isValidSignature(signature.signature, for: statement)
    }
}

/// Trusts nothing: a node given it coordinates, prepares and commits nothing.
public struct NoOperator: DecisionVerifier {
    /// The verifier.
    public init() {}

    public func verifies(_ signature: OperatorSignature, over statement: [UInt8]) -> Bool { false }
}
