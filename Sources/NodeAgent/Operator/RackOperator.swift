import Foundation
import KeyrackCore
import TrustQuorum

/// The operator's side of the control plane: `keyrack rack …` drives
/// ``TrustQuorum/ControlPlane`` over the nodes' admin sockets.
///
/// Every action it carries out is signed by the operator's identity
/// (``signer``: a ticket for each reconfiguration, a commit signature for
/// each commit), whose journal is all it keeps on disk. Each run asks every
/// node where it stands and resumes from the highest configuration whose
/// commit signature ``verifier`` accepts — never from one node's unsigned
/// report: a membership that is already committed only has its missing
/// commits delivered; anything else is (re)started at an epoch above every
/// epoch any node has seen and every epoch the journal holds, so a run
/// interrupted at any point can simply be run again.
public struct RackOperator: Sendable {
    /// The nodes' admin endpoints: socket paths or `host:port` network
    /// addresses (``AdminEndpoint/init(parsing:)``), mixed as needed.
    public var sockets: [String]
    /// Reaches the nodes: their sockets, and network nodes with the operator's credentials.
    public let client: AdminClient
    /// Signs the operator's decisions.
    public let signer: any DecisionSigner
    /// Judges the commit signatures nodes report.
    public let verifier: any DecisionVerifier
    /// The highest epoch the signer's journal holds, if any.
    public var highestSignedEpoch: Epoch?
    /// Where progress lines go.
    public let progress: @Sendable (String) -> Void
    /// How long a run may take before it gives up (it can be re-run).
    public var timeout: Duration = .seconds(60)
    /// How often nodes are polled.
    public var pollInterval: Duration = .milliseconds(50)
    /// Polls without progress before an attempt is abandoned for the next epoch.
    public var stallPolls = 200
    /// How long to keep delivering the commit to members that were down when it was decided.
    public var waitForDownMembers: Duration = .seconds(3)

    /// An operator for the nodes behind `sockets`, signing with `signer` and
    /// trusting the commit signatures `verifier` accepts.
    public init(
        sockets: [String], signer: any DecisionSigner, verifier: any DecisionVerifier,
        highestSignedEpoch: Epoch? = nil, client: AdminClient = AdminClient(),
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.sockets = sockets
        self.client = client
        self.signer = signer
        self.verifier = verifier
        self.highestSignedEpoch = highestSignedEpoch
        self.progress = progress
    }

    /// An operator signing with the identity in `directory` (`keyrack
    /// operator init`) and trusting commits signed under its CA.
    public init(
        sockets: [String], operatorDirectory directory: URL, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) throws(IdentityFileError) {
        let (identity, verifier, client) = try Self.open(operatorDirectory: directory)
        self.init(
            sockets: sockets, signer: identity, verifier: verifier, highestSignedEpoch: identity.highestSignedEpoch,
            client: client, progress: progress)
    }

    /// The operator identity in `directory`, the verifier of its CA
    /// (`operator-ca.pem`), and a client that authenticates with it.
    static func open(operatorDirectory directory: URL) throws(IdentityFileError)
        -> (OperatorIdentity, OperatorCertificateVerifier, AdminClient)
    {
        let identity = try OperatorIdentity(directory: directory)
        let verifier = try OperatorCertificateVerifier(
            bundle: directory.appendingPathComponent("operator-ca.pem").path)
        let credentials = try AdminCredentials(
            identity: identity, intermediate: verifier.intermediate, root: verifier.root)
        return (identity, verifier, AdminClient(credentials: credentials))
    }

    /// One node as seen from the operator.
    public struct NodeReport: Sendable {
        /// The admin socket.
        public let socket: String
        /// The node's status, if it answered.
        public let status: NodeStatus?
        /// Why it did not answer.
        public let error: AdminError?
    }

    /// How long one node may take to answer a survey's status request: a
    /// node behind a partition costs every poll this much, at most.
    public static let surveyTimeout = Duration.seconds(5)

    /// Asks every node for its status (in parallel).
    public func survey() async -> [NodeReport] { await Self.survey(sockets, client: client) }

    /// Asks the node behind each of `sockets` (sockets or addresses) for its status, in parallel.
    public static func survey(_ sockets: [String], client: AdminClient = AdminClient()) async -> [NodeReport] {
        await withTaskGroup(of: (Int, NodeReport).self) { group in
            for (index, socket) in sockets.enumerated() {
                group.addTask { (index, await Self.report(socket, client: client)) }
            }
            var reports: [(Int, NodeReport)] = []
            for await report in group { reports.append(report) }
            return reports.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    static func report(_ socket: String, client: AdminClient) async -> NodeReport {
        do {
            let response = try await client.perform(
                AdminRequest(.status), at: AdminEndpoint(parsing: socket), timeout: surveyTimeout)
            return NodeReport(socket: socket, status: response.status, error: nil)
        } catch {
            return NodeReport(socket: socket, status: nil, error: error)
        }
    }

    /// What the operator wants.
    public enum Goal: Sendable {
        /// The first configuration: every node behind ``sockets``.
        case initialize
        /// The committed members plus the nodes behind these sockets.
        case add([String])
        /// The committed members without these.
        case remove(Set<PlatformId>)
        /// The same members under a new secret.
        case rotate

        var isRotation: Bool {
            if case .rotate = self { return true }
            return false
        }
    }

    /// Drives the rack to `goal` with threshold K (default N/2 + 1) and
    /// returns the committed configuration once every reachable member has
    /// committed it.
    public func run(_ goal: Goal, threshold: Int? = nil) async throws(RackOperatorError) -> Configuration {
        var reports = await survey()
        let reachable = reports.compactMap(\.status)
        guard let rackId = reachable.first?.rackId else {
            throw RackOperatorError(
                .noNodeAnswered,
                "no node answered: " + reports.compactMap { $0.error?.description }.joined(separator: "; "))
        }
        if let other = reachable.first(where: { $0.rackId != rackId }) {
            throw RackOperatorError(.otherRack, "\(other.platform) belongs to rack \(other.rackId), not \(rackId)")
        }
        // Only a commit the operator signed counts, whatever a node says.
        let committed = reachable.compactMap(\.signedCommitted).filter { $0.verifies(under: verifier) }
            .max { $0.epoch < $1.epoch }?.configuration
        for status in reachable
        where status.latestCommitted != nil
            && status.signedCommitted.map({
                $0.verifies(under: verifier)
            }) != true
        {
            progress(
                "\(status.platform) reports epoch \(status.committedEpoch!) without a valid operator signature; ignored"
            )
        }
        let members: Set<PlatformId>
        switch goal {
        case .initialize:
            if let down = reports.first(where: { $0.status == nil }) {
                throw RackOperatorError(
                    .nodeDown, "setting up the rack needs every node: \(down.error?.description ?? down.socket)")
            }
            members = Set(reachable.map(\.platform))
            if let committed, Set(committed.members.keys) != members {
                throw RackOperatorError(
                    .alreadySetUp,
                    "the rack is already set up at epoch \(committed.epoch) with other members: use rack add/remove")
            }
        case .add(let newSockets):
            guard let committed else {
                throw RackOperatorError(.notSetUp, "the rack is not set up yet: run rack init first")
            }
            var adding = self
            adding.sockets = newSockets
            let added = await adding.survey()
            if let down = added.first(where: { $0.status == nil }) {
                throw RackOperatorError(
                    .nodeDown, "the node to add does not answer: \(down.error?.description ?? down.socket)")
            }
            if let stranger = added.compactMap(\.status).first(where: { $0.rackId != rackId }) {
                throw RackOperatorError(
                    .otherRack, "\(stranger.platform) is configured for rack \(stranger.rackId), not \(rackId)")
            }
            members = Set(committed.members.keys).union(added.compactMap(\.status?.platform))
            reports += added
        case .remove(let removed):
            guard let committed else {
                throw RackOperatorError(.notSetUp, "the rack is not set up yet: run rack init first")
            }
            members = Set(committed.members.keys).subtracting(removed)
        case .rotate:
            guard let committed else {
                throw RackOperatorError(.notSetUp, "the rack is not set up yet: run rack init first")
            }
            members = Set(committed.members.keys)
        }
        // The same settings, over the added nodes' sockets too.
        var operatorForAll = self
        operatorForAll.sockets = reports.map(\.socket)
        await operatorForAll.shareAddresses(reports.compactMap(\.status))
        let configuration = try await operatorForAll.drive(
            reports: reports,
            rackId: rackId,
            committed: committed,
            members: members,
            threshold: threshold ?? ReconfigureRequest.defaultThreshold(memberCount: members.count),
            alwaysNewEpoch: goal.isRotation
        )
        await operatorForAll.tellRemoved(reports, configuration)
        return configuration
    }

    /// Tells the nodes that answered and are not members of `configuration`
    /// that they were removed, with its commit signature: their former
    /// peers refuse them at the TLS handshake, so nobody else can.
    func tellRemoved(_ reports: [NodeReport], _ configuration: Configuration) async {
        let removed = reports.filter { report in
            guard let status = report.status, status.expunged == nil else { return false }
            return configuration.members[status.platform] == nil
        }
        guard !removed.isEmpty else { return }
        let signed: SignedConfiguration
        do {
            signed = SignedConfiguration(configuration, signature: try signer.sign(.commit(configuration)))
        } catch {
            progress("cannot tell the removed nodes: \(error)")
            return
        }
        for report in removed {
            let platform = report.status.map(\.platform.description) ?? report.socket
            do {
                _ = try await client.perform(
                    AdminRequest(command: .expunge(signed)), at: AdminEndpoint(parsing: report.socket))
                progress("told \(platform) it was removed at epoch \(configuration.epoch)")
            } catch {
                progress("\(platform) was removed but could not be told: \(error)")
            }
        }
    }

    /// Tells every node where the others listen.
    func shareAddresses(_ statuses: [NodeStatus]) async {
        let book = Dictionary(statuses.map { ($0.platform.description, $0.listen) }, uniquingKeysWith: { a, _ in a })
        for socket in sockets {
            _ = try? await client.perform(AdminRequest(.setPeers, peers: book), at: AdminEndpoint(parsing: socket))
        }
    }

    /// Carries out an ``OperatorRun`` over the admin sockets: the short loop
    /// that asks nodes, sleeps between polls and prints progress.
    private func drive(
        reports surveyed: [NodeReport],
        rackId: RackId,
        committed: Configuration?,
        members: Set<PlatformId>,
        threshold: Int,
        alwaysNewEpoch: Bool
    ) async throws(RackOperatorError) -> Configuration {
        let clock = ContinuousClock()
        var socketOf: [PlatformId: String] = [:]
        for report in surveyed { if let status = report.status { socketOf[status.platform] = report.socket } }
        var run = OperatorRun(
            plan: OperatorRun.Plan(
                rackId: rackId, committed: committed, members: members, threshold: threshold,
                alwaysNewEpoch: alwaysNewEpoch),
            statuses: surveyed.compactMap(\.status),
            highestSignedEpoch: highestSignedEpoch,
            options: OperatorRun.Options(
                timeout: timeout, stallPolls: stallPolls, waitForDownMembers: waitForDownMembers),
            now: clock.now
        )
        var outputs = run.start(now: clock.now)[...]
        while let output = outputs.popFirst() {
            switch output {
            case .carryOut(let action):
                let outcome = await carryOut(action, socket: socketOf[action.target])
                outputs += run.outcome(of: action, outcome, now: clock.now)
            case .progress(let line):
                progress(line)
            case .poll:
                try? await Task.sleep(for: pollInterval)
                let reports = await survey()
                for report in reports { if let status = report.status { socketOf[status.platform] = report.socket } }
                outputs += run.surveyed(reports.compactMap(\.status), now: clock.now)
            case .finished(let configuration):
                return configuration
            case .failed(let error):
                throw error
            }
        }
        throw RackOperatorError(.timedOut, "the run stopped without an outcome; re-run the same command to resume")
    }

    /// Signs `action` and asks the node behind `socket` to do it.
    private func carryOut(_ action: ControlPlaneAction, socket: String?) async -> ControlPlaneOutcome {
        guard let socket else { return .unreachable }
        let signed: SignedAction
        do {
            signed = try action.signed(by: signer)
        } catch {
            progress("the operator did not sign \(action.decision): \(error)")
            return .refused(code: error.code.rawValue, reason: error.reason)
        }
        let command: AdminCommand
        switch signed {
        case .reconfigure(let ticket): command = .reconfigure(ticket)
        case .upgradeFromLrtq:
            return .refused(
                code: AdminError.Code.request.rawValue, reason: "upgrading from LRTQ is not offered by this tool")
        case .commit(_, let epoch, let signature): command = .commit(epoch, signature)
        case .prepareAndCommit(_, let configuration): command = .prepareAndCommit(configuration)
        }
        do {
            _ = try await client.perform(AdminRequest(command: command), at: AdminEndpoint(parsing: socket))
            return .done
        } catch  where error.code == .unreachable {
            return .unreachable
        } catch {
            return .refused(code: error.code.rawValue, reason: error.reason)
        }
    }
}

/// An operator command that could not finish.
public typealias RackOperatorError = CodedError<RackOperatorErrorCode>

/// The codes of ``RackOperatorError``.
public struct RackOperatorErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// No node answered.
    public static let noNodeAnswered = RackOperatorErrorCode("RACK-NO-NODE")

    /// A node belongs to another rack.
    public static let otherRack = RackOperatorErrorCode("RACK-OTHER-RACK")

    /// The rack has no committed configuration yet.
    public static let notSetUp = RackOperatorErrorCode("RACK-NOT-SET-UP")

    /// The rack is set up with other members.
    public static let alreadySetUp = RackOperatorErrorCode("RACK-ALREADY-SET-UP")

    /// A node the command needs does not answer.
    public static let nodeDown = RackOperatorErrorCode("RACK-NODE-DOWN")

    /// The control plane refused the goal (N or K out of range).
    public static let refused = RackOperatorErrorCode("RACK-REFUSED")

    /// The command did not finish in time (it can be run again).
    public static let timedOut = RackOperatorErrorCode("RACK-TIMED-OUT")
}
