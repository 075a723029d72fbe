import Crypto
import Foundation
import KeyrackCore
import TrustQuorum

/// `keyrack rack policy set`: distributes a measurement policy, signed by
/// the operator, to every node named, in two rounds.
///
/// 1. Every node is asked where it stands; they must all be of one rack.
///    The version is the one a node already holds these exact contents
///    under, when no node holds a higher one (a rerun resumes), else one
///    above every version any node holds and the operator's journal records.
/// 2. Every node checks the signed policy without applying it (a dry run:
///    signature, rack, version, that it parses there, and that it admits
///    the node's own software). Only when all of them accept is it applied,
///    on all of them; with ``force`` it is applied on those that accepted.
///
/// Nothing is applied when a node refuses or does not answer, so a policy
/// that would lock out the software one node still runs cannot reach the
/// others: upgrade that node first (with the policy admitting old and new),
/// then drop the old measurement.
public struct PolicyRollout: Sendable {
    /// The nodes' admin endpoints (sockets or `host:port`).
    public var sockets: [String]
    /// Reaches the nodes.
    public let client: AdminClient
    /// Signs the policy (and journals the version).
    public let identity: OperatorIdentity
    /// Apply on the nodes that accept even when others refuse or do not answer.
    public var force = false
    /// How long one node may take to answer.
    public var timeout: Duration = .seconds(10)
    /// Where progress lines go.
    public let progress: @Sendable (String) -> Void

    /// A rollout to the nodes behind `sockets`, signed by the identity in
    /// `operatorDirectory` (`keyrack operator init`).
    public init(
        sockets: [String], operatorDirectory directory: URL, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) throws(IdentityFileError) {
        let (identity, _, client) = try RackOperator.open(operatorDirectory: directory)
        self.init(sockets: sockets, identity: identity, client: client, progress: progress)
    }

    /// A rollout signing with `identity` and reaching the nodes with `client`.
    public init(
        sockets: [String], identity: OperatorIdentity, client: AdminClient,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.sockets = sockets
        self.identity = identity
        self.client = client
        self.progress = progress
    }

    /// What happened on one node.
    public struct NodeOutcome: Sendable, Equatable {
        /// Its admin endpoint.
        public let socket: String
        /// Its platform id, if it answered.
        public let platform: PlatformId?
        /// What it did.
        public let result: Result

        /// What a node did with the policy.
        public enum Result: Sendable, Equatable {
            /// It put the policy in force; this is its state now.
            case applied(NodePolicyState)
            /// It already had this version in force.
            case unchanged(NodePolicyState)
            /// It accepted the dry run, but the policy was not applied because another node refused.
            case held
            /// It refused the policy (the node's reason).
            case refused(AdminError)
            /// It did not answer.
            case unreachable(AdminError)
        }

        /// Whether the node has the policy in force.
        public var inForce: Bool {
            switch result {
            case .applied, .unchanged: return true
            case .held, .refused, .unreachable: return false
            }
        }

        /// One line for the operator.
        public var line: String {
            let node = platform.map { "\($0) (\(socket))" } ?? socket
            switch result {
            case .applied(let state): return "\(node): in force now: \(state)"
            case .unchanged(let state): return "\(node): already in force: \(state)"
            case .held: return "\(node): accepts it, not applied (another node refused or did not answer)"
            case .refused(let error): return "\(node): REFUSED: \(error.reason)"
            case .unreachable(let error): return "\(node): UNREACHABLE: \(error.reason)"
            }
        }
    }

    /// The result of a rollout.
    public struct Report: Sendable {
        /// The version signed.
        public let version: UInt64
        /// SHA-256 of the policy, hex.
        public let digest: String
        /// Per node, in the order of ``sockets``.
        public let nodes: [NodeOutcome]
        /// Whether every node has the policy in force.
        public var complete: Bool { nodes.allSatisfy(\.inForce) }
    }

    /// Signs `policy` and distributes it (see the type's documentation).
    ///
    /// - Throws: ``RackOperatorError`` when no node answers, when nodes of
    ///   several racks are named, when the document is not JSON, or when the
    ///   journal refuses the version (``RackOperatorErrorCode/refused``). A
    ///   node's refusal is not thrown: it is in the report.
    public func run(policy: Data) async throws(RackOperatorError) -> Report {
        guard policy.count <= SignedNodePolicy.maximumLength else {
            throw RackOperatorError(
                .refused, "the policy is longer than \(SignedNodePolicy.maximumLength) bytes")
        }
        guard (try? JSONSerialization.jsonObject(with: policy)) is [String: Any] else {
            throw RackOperatorError(.refused, "the policy is not a JSON object")
        }
        let reports = await RackOperator.survey(sockets, client: client)
        let statuses = reports.compactMap(\.status)
        guard let rackId = statuses.first?.rackId else {
            throw RackOperatorError(.noNodeAnswered, "no node answered: \(Self.unreachableList(reports))")
        }
        if let other = statuses.first(where: { $0.rackId != rackId }) {
            throw RackOperatorError(
                .otherRack, "\(other.platform) is in rack \(other.rackId), others in \(rackId): name one rack's nodes")
        }
        let digest = Array(SHA256.hash(data: policy)).hexString
        let journal = identity.highestSignedPolicyVersion(rackId: rackId)
        let version = Self.version(
            digest: digest, held: statuses.compactMap(\.policy), journal: journal,
            journalHolds: journal.map { identity.hasSigned(policy: policy, rackId: rackId, version: $0) } ?? false)
        let signed: SignedNodePolicy
        do {
            signed = try identity.sign(policy: policy, rackId: rackId, version: version)
        } catch {
            throw RackOperatorError(.refused, "cannot sign version \(version): \(error.reason)")
        }
        progress("policy sha256 \(digest.prefix(16))… as version \(version) of rack \(rackId)")

        let checked = await each(reports) { report in
            guard report.status != nil else { return .unreachable(report.error ?? AdminError(.halted, "no answer")) }
            return await self.send(signed, to: report.socket, dryRun: true)
        }
        let blocked = checked.filter { !Self.accepted($0.result) }
        if !blocked.isEmpty, !force {
            progress(
                "not applied anywhere: \(blocked.count) of \(checked.count) nodes refused it or did not answer "
                    + "(fix them and run the command again, or --force to apply it on the others)")
            let nodes = checked.map {
                Self.accepted($0.result) ? NodeOutcome(socket: $0.socket, platform: $0.platform, result: .held) : $0
            }
            for node in nodes { progress(node.line) }
            return Report(version: version, digest: digest, nodes: nodes)
        }
        let applied = await each(reports) { report in
            guard let outcome = checked.first(where: { $0.socket == report.socket }), Self.accepted(outcome.result)
            else {
                return checked.first(where: { $0.socket == report.socket })?.result ?? .held
            }
            return await self.send(signed, to: report.socket, dryRun: false)
        }
        for node in applied { progress(node.line) }
        return Report(version: version, digest: digest, nodes: applied)
    }

    /// The version to sign `digest` under, given the states nodes hold, the
    /// highest version the journal records and whether that one has these
    /// contents: the version a node holds them under when none holds a
    /// higher one, else the journal's highest when it has them and is above
    /// every node's (signed by a run that applied nothing), else one above all.
    static func version(digest: String, held: [NodePolicyState], journal: UInt64?, journalHolds: Bool) -> UInt64 {
        let versions = held.compactMap(\.version)
        let nodes = versions.max() ?? 0
        if let same = held.filter({ $0.source == .operator && $0.digest == digest }).compactMap(\.version).max(),
            same == nodes
        {
            return same
        }
        if let journal, journalHolds, journal > nodes { return journal }
        return max(nodes, journal ?? 0) + 1
    }

    private static func accepted(_ result: NodeOutcome.Result) -> Bool {
        switch result {
        case .applied, .unchanged: return true
        case .held, .refused, .unreachable: return false
        }
    }

    private static func unreachableList(_ reports: [RackOperator.NodeReport]) -> String {
        reports.map { "\($0.socket) (\($0.error?.reason ?? "no answer"))" }.joined(separator: ", ")
    }

    /// Sends the signed policy to one node.
    private func send(_ signed: SignedNodePolicy, to socket: String, dryRun: Bool) async -> NodeOutcome.Result {
        do {
            let before = try await client.perform(
                AdminRequest(.status), at: AdminEndpoint(parsing: socket), timeout: timeout
            ).status?.policy
            let response = try await client.perform(
                AdminRequest(.setPolicy, policy: signed, dryRun: dryRun ? true : nil),
                at: AdminEndpoint(parsing: socket), timeout: timeout)
            guard let state = response.policy else {
                return .refused(AdminError(.request, "the node answered without its policy state"))
            }
            return before == state ? .unchanged(state) : .applied(state)
        } catch {
            switch error.code {
            case .policyRefused, .request, .stateWrite, .halted, .forbidden: return .refused(error)
            default: return .unreachable(error)
            }
        }
    }

    /// `body` on every node at once, outcomes in the order of `reports`.
    private func each(
        _ reports: [RackOperator.NodeReport],
        _ body: @escaping @Sendable (RackOperator.NodeReport) async -> NodeOutcome.Result
    ) async -> [NodeOutcome] {
        await withTaskGroup(of: (Int, NodeOutcome).self) { group in
            for (index, report) in reports.enumerated() {
                group.addTask {
                    (
                        index,
                        NodeOutcome(
                            socket: report.socket, platform: report.status?.platform, result: await body(report))
                    )
                }
            }
            var outcomes: [(Int, NodeOutcome)] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }
}
