import Crypto
import Foundation
import KeyrackCore
import Synchronization
import TrustQuorum

/// A node measurement policy signed by the operator for one rack, as
/// `keyrack rack policy set` distributes it over the admin API.
///
/// The operator signs `"keyrack node policy v1"`, the rack id, the version
/// (big-endian) and the SHA-256 of the policy's exact bytes: a policy signed
/// for one rack cannot be replayed to another, and a version is never signed
/// twice with different contents (the operator's journal records each).
public struct SignedNodePolicy: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The rack the policy is for.
    public var rackId: RackId
    /// Higher than every version signed before for this rack; a node never goes back.
    public var version: UInt64
    /// The policy document (the node attestation policy's JSON), byte for byte.
    public var policy: Data
    /// The operator's signature over ``statement``.
    public var signature: OperatorSignature

    /// A signed policy from its parts (nothing is checked here).
    public init(rackId: RackId, version: UInt64, policy: Data, signature: OperatorSignature) {
        self.rackId = rackId
        self.version = version
        self.policy = policy
        self.signature = signature
    }

    /// The longest policy document that is distributed (it must fit an admin frame).
    public static let maximumLength = 256 * 1024

    /// The bytes the operator signs for `policy` as version `version` of `rackId`'s policy.
    public static func statement(rackId: RackId, version: UInt64, policy: Data) -> [UInt8] {
        var bytes = Array("keyrack node policy v1".utf8)
        bytes += rackId.bytes
        bytes += withUnsafeBytes(of: version.bigEndian) { Array($0) }
        bytes += Array(SHA256.hash(data: policy))
        return bytes
    }

    /// The statement of this policy.
    public var statement: [UInt8] { Self.statement(rackId: rackId, version: version, policy: policy) }

    /// SHA-256 of the policy document, hex: what nodes report as the policy in force.
    public var digest: String { Array(SHA256.hash(data: policy)).hexString }

    /// Whether the operator signature verifies under `verifier`.
    public func verifies(under verifier: any DecisionVerifier) -> Bool {
        verifier.verifies(signature, over: statement)
    }

    public var description: String { "SignedNodePolicy(version \(version), sha256 \(digest))" }
}

/// The measurement policy a node is applying, as it reports it.
public struct NodePolicyState: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Where the policy in force came from.
    public enum Source: String, Codable, Sendable {
        /// The configuration's policy file (read at start and on SIGHUP).
        case file
        /// An operator-signed policy distributed over the admin API.
        case `operator`
    }

    /// Where it came from.
    public var source: Source
    /// For an operator-signed policy: its version.
    public var version: UInt64?
    /// For an operator-signed policy: the operator who signed it, if known.
    public var signedBy: String?
    /// SHA-256 of the policy document, hex.
    public var digest: String
    /// `enforce` or `permissive`.
    public var mode: String

    public var description: String {
        let origin =
            version.map { "operator-signed version \($0)\(signedBy.map { " by \($0)" } ?? "")" } ?? "policy file"
        return "\(origin), sha256 \(digest.prefix(16))…, \(mode)"
    }
}

/// The node's measurement policy in force, and how it changes while the
/// node runs: an operator-signed update (``apply(_:dryRun:)``), or the local
/// policy file read again (``reloadFile()``, on SIGHUP).
///
/// An accepted signed policy is written, atomically, to every ledger
/// directory as `node-policy.json` before it takes effect, and is the
/// policy at every later start: the policy file is then only read again
/// once the signed copies are removed. Signed versions only go up, so an
/// old policy that admitted since-retired software cannot be replayed. A
/// node refuses a policy that would refuse its own software (an upgrade
/// must admit the new software before the old is dropped), one for another
/// rack, and one whose signature does not chain to the pinned operator CA.
public final class NodePolicyStore: Sendable {
    /// The name of the signed copies in each ledger directory.
    public static let fileName = "node-policy.json"

    private struct Current: Sendable {
        var policy: NodeAttestationPolicy
        var state: NodePolicyState
        var signed: SignedNodePolicy?
    }

    let file: URL
    let directories: [URL]
    let rackId: RackId
    let verifier: any DecisionVerifier
    let selfCheck: @Sendable (NodeAttestationPolicy) -> [AttestationViolation]
    private let current: Mutex<Current>

    /// Opens the policy in force: the highest signed copy in `directories`
    /// that verifies, else the policy file `file`.
    ///
    /// - Parameters:
    ///   - selfCheck: the rules a policy would find broken by this node's
    ///     own evidence (empty when it admits the node, or when the node's
    ///     evidence cannot be judged here, as a TD's quote).
    /// - Throws: the file's error when it is the policy and cannot be read;
    ///   ``NodeAttestationPolicyErrorCode/signed`` when signed copies exist
    ///   but none is usable (the node does not fall back to an older policy
    ///   on its own).
    public init(
        file: URL, directories: [URL], rackId: RackId, verifier: any DecisionVerifier,
        selfCheck: @escaping @Sendable (NodeAttestationPolicy) -> [AttestationViolation] = { _ in [] }
    ) throws(NodeAttestationPolicyError) {
        self.file = file
        self.directories = directories
        self.rackId = rackId
        self.verifier = verifier
        self.selfCheck = selfCheck
        var problems: [String] = []
        var best: (SignedNodePolicy, NodeAttestationPolicy)?
        for directory in directories {
            let path = directory.appendingPathComponent(Self.fileName).path
            guard FileManager.default.fileExists(atPath: path) else { continue }
            do throws(NodeAttestationPolicyError) {
                let (signed, policy) = try Self.readSigned(
                    path, rackId: rackId, verifier: verifier, base: file.deletingLastPathComponent())
                if signed.version > best?.0.version ?? 0 { best = (signed, policy) }
            } catch {
                problems.append(error.reason)
            }
        }
        if let (signed, policy) = best {
            current = Mutex(
                Current(
                    policy: policy, state: Self.state(of: policy, signed: signed, verifier: verifier), signed: signed))
        } else if !problems.isEmpty {
            throw NodeAttestationPolicyError(
                .signed,
                "the operator-signed policy cannot be used (\(problems.joined(separator: "; "))); the node does not "
                    + "fall back to its policy file on its own: remove \(Self.fileName) from the ledger directories "
                    + "to use \(file.path), or have the operator set the policy again")
        } else {
            let (policy, digest) = try Self.readFile(file)
            current = Mutex(
                Current(
                    policy: policy,
                    state: NodePolicyState(source: .file, digest: digest, mode: policy.mode.rawValue), signed: nil))
        }
    }

    /// The policy peers are appraised against now.
    public var policy: NodeAttestationPolicy { current.withLock { $0.policy } }

    /// Where the policy in force came from, its version and digest.
    public var state: NodePolicyState { current.withLock { $0.state } }

    /// Checks `signed` and, unless `dryRun`, persists it and puts it in force.
    /// Applying the version already in force again changes nothing and succeeds.
    ///
    /// - Returns: the state afterwards (or, for a dry run, what it would be).
    /// - Throws: ``AdminError`` with ``AdminError/Code/policyRefused``
    ///   naming the check that failed, or ``AdminError/Code/stateWrite`` when
    ///   no ledger directory could hold the signed copy (nothing changed).
    public func apply(_ signed: SignedNodePolicy, dryRun: Bool = false) throws(AdminError) -> NodePolicyState {
        func refuse(_ reason: String) -> AdminError { AdminError(.policyRefused, reason) }
        guard signed.rackId == rackId else {
            throw refuse("the policy is signed for rack \(signed.rackId), not this node's rack \(rackId)")
        }
        guard signed.policy.count <= SignedNodePolicy.maximumLength else {
            throw refuse("the policy is longer than \(SignedNodePolicy.maximumLength) bytes")
        }
        guard signed.verifies(under: verifier) else {
            throw refuse("the policy's signature does not verify under the operator CA this node pins")
        }
        let inForce = current.withLock { $0.signed }
        if let inForce {
            if signed.version == inForce.version {
                guard signed.digest == inForce.digest else {
                    throw refuse(
                        "version \(signed.version) is in force with other contents: a version is signed once")
                }
                return state
            }
            guard signed.version > inForce.version else {
                throw refuse(
                    "version \(signed.version) is older than the policy in force (version \(inForce.version)): "
                        + "a signed policy is never rolled back")
            }
        }
        let policy: NodeAttestationPolicy
        do {
            policy = try NodeAttestationPolicy(json: signed.policy, relativeTo: file.deletingLastPathComponent())
        } catch {
            throw refuse("the policy cannot be used on this node (\(error.code)): \(error.reason)")
        }
        let own = selfCheck(policy)
        if !own.isEmpty, policy.mode == .enforce {
            throw refuse(
                "the policy does not admit this node's own software (\(own.map(\.description).joined(separator: "; "))): "
                    + "upgrade this node first, or keep its measurement in the policy until it is")
        }
        let after = Self.state(of: policy, signed: signed, verifier: verifier)
        if dryRun { return after }
        try persist(signed)
        current.withLock { $0 = Current(policy: policy, state: after, signed: signed) }
        return after
    }

    /// Reads the policy file again and puts it in force, unless an
    /// operator-signed policy is in force (then the file is not read).
    /// - Returns: the new state, or `nil` if an operator-signed policy is in force.
    /// - Throws: the file's error; the policy in force is unchanged then.
    public func reloadFile() throws(NodeAttestationPolicyError) -> NodePolicyState? {
        guard current.withLock({ $0.signed }) == nil else { return nil }
        let (policy, digest) = try Self.readFile(file)
        let state = NodePolicyState(source: .file, digest: digest, mode: policy.mode.rawValue)
        current.withLock { $0 = Current(policy: policy, state: state, signed: nil) }
        return state
    }

    /// Writes the signed copy to every ledger directory; at least one must take it.
    private func persist(_ signed: SignedNodePolicy) throws(AdminError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let bytes = try? encoder.encode(signed) else {
            throw AdminError(.stateWrite, "the signed policy cannot be encoded")
        }
        var failures: [String] = []
        for directory in directories {
            do {
                try writeAtomically(Array(bytes), to: directory, name: Self.fileName)
            } catch {
                failures.append(error.reason)
            }
        }
        guard failures.count < directories.count else {
            throw AdminError(
                .stateWrite,
                "the signed policy could not be written to any ledger directory (\(failures.joined(separator: "; "))); "
                    + "the policy in force is unchanged")
        }
    }

    private static func state(
        of policy: NodeAttestationPolicy, signed: SignedNodePolicy, verifier: any DecisionVerifier
    ) -> NodePolicyState {
        NodePolicyState(
            source: .operator, version: signed.version,
            signedBy: (verifier as? OperatorCertificateVerifier)?.operatorName(signed.signature.credential),
            digest: signed.digest, mode: policy.mode.rawValue)
    }

    private static func readFile(_ file: URL) throws(NodeAttestationPolicyError) -> (NodeAttestationPolicy, String) {
        let policy = try NodeAttestationPolicy.load(contentsOf: file)
        let bytes = FileManager.default.contents(atPath: file.path) ?? Data()
        return (policy, Array(SHA256.hash(data: bytes)).hexString)
    }

    private static func readSigned(
        _ path: String, rackId: RackId, verifier: any DecisionVerifier, base: URL
    ) throws(NodeAttestationPolicyError) -> (SignedNodePolicy, NodeAttestationPolicy) {
        guard let data = FileManager.default.contents(atPath: path),
            let signed = try? JSONDecoder().decode(SignedNodePolicy.self, from: data)
        else {
            throw NodeAttestationPolicyError(.signed, "\(path) is not a signed policy")
        }
        guard signed.rackId == rackId, signed.verifies(under: verifier) else {
            throw NodeAttestationPolicyError(
                .signed, "\(path) is not signed for this rack by an operator this node trusts")
        }
        do {
            return (signed, try NodeAttestationPolicy(json: signed.policy, relativeTo: base))
        } catch {
            throw NodeAttestationPolicyError(error.code, "\(path): \(error.reason)")
        }
    }
}

extension NodeAttestationPolicy {
    /// The rules this policy finds broken by a node whose own software
    /// measures as `log` (software root-of-trust evidence).
    public func ownViolations(_ log: MeasurementLog) -> [AttestationViolation] {
        guard let softwareRootOfTrust else {
            return [.init(rule: "evidence kind", detail: "the policy accepts no software root-of-trust evidence")]
        }
        return softwareRootOfTrust.violations(log)
    }
}
