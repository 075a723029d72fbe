import Foundation
import TrustQuorum

/// The operator's side of the control plane: `keyrack rack …` drives
/// ``TrustQuorum/ControlPlane`` over the nodes' admin sockets.
///
/// It keeps nothing on disk. Each run asks every node where it stands and
/// resumes from that: a membership that is already committed only has its
/// missing commits delivered; anything else is (re)started at an epoch above
/// every epoch any node has seen, so a run interrupted at any point can
/// simply be run again.
public struct RackOperator: Sendable {
    /// The nodes' admin sockets.
    public var sockets: [String]
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

    /// An operator for the nodes behind `sockets`.
    public init(sockets: [String], progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.sockets = sockets
        self.progress = progress
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

    /// Asks every node for its status (in parallel).
    public func survey() async -> [NodeReport] {
        await withTaskGroup(of: (Int, NodeReport).self) { group in
            for (index, socket) in sockets.enumerated() {
                group.addTask { (index, await Self.report(socket)) }
            }
            var reports: [(Int, NodeReport)] = []
            for await report in group { reports.append(report) }
            return reports.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    static func report(_ socket: String) async -> NodeReport {
        do {
            let response = try await AdminSocket.perform(AdminRequest(.status), path: socket)
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
                "no node answered: " + reports.compactMap { $0.error?.description }.joined(separator: "; "))
        }
        if let other = reachable.first(where: { $0.rackId != rackId }) {
            throw RackOperatorError("\(other.platform) belongs to rack \(other.rackId), not \(rackId)")
        }
        let committed = reachable.compactMap(\.latestCommitted).max { $0.epoch < $1.epoch }
        let members: Set<PlatformId>
        switch goal {
        case .initialize:
            if let down = reports.first(where: { $0.status == nil }) {
                throw RackOperatorError(
                    "setting up the rack needs every node: \(down.error?.description ?? down.socket)")
            }
            members = Set(reachable.map(\.platform))
            if let committed, Set(committed.members.keys) != members {
                throw RackOperatorError(
                    "the rack is already set up at epoch \(committed.epoch) with other members: use rack add/remove")
            }
        case .add(let newSockets):
            guard let committed else { throw RackOperatorError("the rack is not set up yet: run rack init first") }
            let added = await RackOperator(sockets: newSockets).survey()
            if let down = added.first(where: { $0.status == nil }) {
                throw RackOperatorError("the node to add does not answer: \(down.error?.description ?? down.socket)")
            }
            if let stranger = added.compactMap(\.status).first(where: { $0.rackId != rackId }) {
                throw RackOperatorError("\(stranger.platform) is configured for rack \(stranger.rackId), not \(rackId)")
            }
            members = Set(committed.members.keys).union(added.compactMap(\.status?.platform))
            reports += added
        case .remove(let removed):
            guard let committed else { throw RackOperatorError("the rack is not set up yet: run rack init first") }
            members = Set(committed.members.keys).subtracting(removed)
        case .rotate:
            guard let committed else { throw RackOperatorError("the rack is not set up yet: run rack init first") }
            members = Set(committed.members.keys)
        }
        // The same settings, over the added nodes' sockets too.
        var operatorForAll = self
        operatorForAll.sockets = reports.map(\.socket)
        await operatorForAll.shareAddresses(reports.compactMap(\.status))
        return try await operatorForAll.drive(
            reports: reports,
            rackId: rackId,
            committed: committed,
            members: members,
            threshold: threshold ?? ReconfigureRequest.defaultThreshold(memberCount: members.count),
            alwaysNewEpoch: goal.isRotation
        )
    }

    /// Tells every node where the others listen.
    func shareAddresses(_ statuses: [NodeStatus]) async {
        let book = Dictionary(statuses.map { ($0.platform.description, $0.listen) }, uniquingKeysWith: { a, _ in a })
        for socket in sockets {
            _ = try? await AdminSocket.perform(AdminRequest(.setPeers, peers: book), path: socket)
        }
    }

    // Swift 6.3's optimizer crashes on this function ("Found ownership error"
    // in CopyPropagation, release builds only); it polls over sockets, so
    // leaving it unoptimized costs nothing measurable.
    @_optimize(none)
    private func drive(
        reports surveyed: [NodeReport],
        rackId: RackId,
        committed: Configuration?,
        members: Set<PlatformId>,
        threshold: Int,
        alwaysNewEpoch: Bool
    ) async throws(RackOperatorError) -> Configuration {
        var reports = surveyed
        var socketOf: [PlatformId: String] = [:]
        for report in reports { if let status = report.status { socketOf[status.platform] = report.socket } }
        let highest = reports.compactMap { $0.status?.highestEpochSeen }.max() ?? Epoch(0)
        let committedBy = Set(
            reports.compactMap(\.status).filter { $0.committedEpoch == committed?.epoch }.map(\.platform)
        )
        var controlPlane = ControlPlane(
            rackId: rackId,
            options: ControlPlaneOptions(stallTicks: stallPolls),
            resumingFrom: committed,
            committedMembers: committedBy,
            highestEpoch: highest
        )
        let done = committed.map { Set($0.members.keys) == members && $0.threshold == threshold } ?? false
        var actions: [ControlPlaneAction] = []
        if done && !alwaysNewEpoch {
            progress(
                "epoch \(committed?.epoch ?? Epoch(0)) already has these \(members.count) members; delivering missing commits"
            )
        } else {
            do {
                let available = Self.available(reports)
                if let action = try controlPlane.startReconfiguration(
                    members: members,
                    threshold: threshold,
                    available: available
                ) {
                    actions.append(action)
                }
            } catch {
                throw RackOperatorError(error.description)
            }
        }
        let target = controlPlane.currentAttempt?.epoch ?? committed?.epoch ?? Epoch(0)
        let deadline = ContinuousClock.now + timeout
        var lastAcks = -1
        var announcedCommit = false
        var graceDeadline: ContinuousClock.Instant?
        while true {
            while !actions.isEmpty {
                let action = actions.removeFirst()
                let refusal = try await carryOut(action, socketOf: socketOf)
                if let next = record(action, refusal: refusal, in: &controlPlane, available: Self.available(reports)) {
                    actions.append(next)
                }
            }
            if let last = controlPlane.lastCommitted, last.epoch >= target, !controlPlane.isReconfiguring {
                if !announcedCommit {
                    announcedCommit = true
                    if last.epoch != committed?.epoch {
                        progress("epoch \(last.epoch) committed: N=\(last.memberCount), K=\(last.threshold)")
                    }
                }
                let waiting = controlPlane.pendingCommits.intersection(Self.available(reports))
                // Members that are down get a grace period: a node that is rebooting is told to commit
                // when it answers again, instead of staying behind until the next operator command.
                if graceDeadline == nil { graceDeadline = ContinuousClock.now + waitForDownMembers }
                let graceOver = graceDeadline.map { ContinuousClock.now >= $0 } ?? true
                if waiting.isEmpty && (controlPlane.pendingCommits.isEmpty || graceOver) {
                    let missing = controlPlane.pendingCommits.sorted()
                    if !missing.isEmpty {
                        progress(
                            "not reachable, will catch up when back: "
                                + missing.map(\.description).joined(separator: ", "))
                    }
                    return last
                }
            }
            guard ContinuousClock.now < deadline else {
                throw RackOperatorError("gave up after \(timeout); re-run the same command to resume")
            }
            try? await Task.sleep(for: pollInterval)
            reports = await survey()
            for report in reports { if let status = report.status { socketOf[status.platform] = report.socket } }
            var available = Self.available(reports)
            if let attempt = controlPlane.currentAttempt,
                let status = reports.first(where: { $0.status?.platform == attempt.coordinator })?.status
            {
                if status.coordinating?.epoch != attempt.epoch, (status.committedEpoch ?? Epoch(0)) < attempt.epoch {
                    // The coordinator restarted and forgot the attempt: retry at the next epoch now.
                    available.remove(attempt.coordinator)
                }
                if let coordinating = status.coordinating, coordinating.epoch == attempt.epoch {
                    if coordinating.acked.count != lastAcks {
                        lastAcks = coordinating.acked.count
                        if let config = coordinating.configuration {
                            let quorum = ControlPlane.commitQuorum(
                                threshold: config.threshold, memberCount: config.memberCount)
                            progress(
                                "epoch \(attempt.epoch): \(lastAcks)/\(config.memberCount) prepared (commit at \(quorum))"
                            )
                        } else {
                            progress(
                                "epoch \(attempt.epoch): \(attempt.coordinator) is gathering the old epoch's shares")
                        }
                    }
                    actions += controlPlane.coordinatorReported(
                        coordinating.coordinatorStatus, from: attempt.coordinator, available: available)
                }
            }
            // Confirm commits the nodes report (a node may have committed through a peer's CommitAdvance).
            if let last = controlPlane.lastCommitted {
                for status in reports.compactMap(\.status) where status.committedEpoch.map({ $0 >= last.epoch }) == true
                {
                    controlPlane.commitConfirmed(by: status.platform, epoch: last.epoch)
                }
            }
            let before = controlPlane.currentAttempt?.epoch
            actions += controlPlane.tick(available: available)
            if let after = controlPlane.currentAttempt?.epoch, after != before, let before {
                progress("epoch \(before) stalled or lost its coordinator; retrying at epoch \(after)")
                lastAcks = -1
            }
        }
    }

    /// Sends `action` to its node; returns the node's refusal, if any.
    private func carryOut(_ action: ControlPlaneAction, socketOf: [PlatformId: String]) async throws(RackOperatorError)
        -> AdminError?
    {
        guard let socket = socketOf[action.target] else { return nil }
        let request: AdminRequest
        switch action {
        case .reconfigure(let coordinator, let reconfigure):
            progress(
                "epoch \(reconfigure.epoch): asking \(coordinator) to coordinate N=\(reconfigure.members.count), K=\(reconfigure.threshold)"
            )
            request = AdminRequest(.reconfigure, reconfigure: reconfigure)
        case .upgradeFromLrtq:
            throw RackOperatorError("upgrading from LRTQ is not offered by this tool")
        case .commit(_, let epoch):
            request = AdminRequest(.commit, epoch: epoch)
        case .prepareAndCommit(_, let configuration):
            request = AdminRequest(.prepareAndCommit, configuration: configuration)
        }
        do {
            _ = try await AdminSocket.perform(request, path: socket)
            return nil
        } catch {
            return error
        }
    }

    /// What the control plane learns from the outcome of `action`; returns the
    /// next action to carry out (another coordinator after a refusal).
    private func record(
        _ action: ControlPlaneAction,
        refusal: AdminError?,
        in controlPlane: inout ControlPlane,
        available: Set<PlatformId>
    ) -> ControlPlaneAction? {
        switch (action, refusal) {
        case (.commit(let node, let epoch), nil):
            controlPlane.commitConfirmed(by: node, epoch: epoch)
        case (.prepareAndCommit(let node, let configuration), nil):
            controlPlane.commitConfirmed(by: node, epoch: configuration.epoch)
        case (.reconfigure(let coordinator, _), let error?):
            progress("\(coordinator) refused to coordinate (\(error.code)); trying the next epoch")
            return controlPlane.reconfigurationRefused(by: coordinator, available: available)
        case (.commit(let node, _), let error?):
            if error.code == AdminError.Code(CommitError.Code.notPrepared) { controlPlane.commitRefused(by: node) }
        case (.prepareAndCommit(let node, _), let error?):
            progress("\(node) refused the commit: \(error)")
        default:
            break
        }
        return nil
    }

    /// Nodes that answered and have not been expunged.
    static func available(_ reports: [NodeReport]) -> Set<PlatformId> {
        Set(reports.compactMap(\.status).filter { $0.expunged == nil }.map(\.platform))
    }
}

/// An operator command that could not finish.
public struct RackOperatorError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
