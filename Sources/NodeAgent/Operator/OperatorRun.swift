import TrustQuorum

/// One operator command driving ``TrustQuorum/ControlPlane`` to its goal,
/// as a value: it is given what the nodes report and what became of each
/// action, with the time passed in, and says what to do next. ``RackOperator``
/// is the short loop that carries this out over the admin sockets; tests
/// drive it with values and a clock of their own.
///
/// The rules it keeps:
/// - A membership that is already committed (and not a rotation) only has
///   its missing commits delivered; anything else starts at an epoch above
///   every epoch any node has seen.
/// - What an action's outcome means is ``ControlPlane/record(_:outcome:available:)``'s
///   to say (the simulator calls the same).
/// - A coordinator that restarted and forgot its attempt is treated as
///   unavailable, so the attempt moves to the next epoch at once.
/// - Once committed, members that are down get a grace period
///   (``Options/waitForDownMembers``) to come back and be told; those that
///   do not are named and catch up later.
/// - The run gives up after ``Options/timeout`` (it can be run again).
public struct OperatorRun<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What to do next.
    public enum Output: Sendable, Equatable {
        /// Ask the node to do this, then report with ``outcome(of:_:now:)``.
        case carryOut(ControlPlaneAction)
        /// A line for the person running the command.
        case progress(String)
        /// Wait a poll interval, ask every node for its status, and report with ``surveyed(_:now:)``.
        case poll
        /// The goal is committed on every reachable member.
        case finished(Configuration)
        /// The run cannot finish.
        case failed(RackOperatorError)
    }

    /// Tunables.
    public struct Options: Sendable, Equatable {
        /// How long a run may take before it gives up.
        public var timeout: Duration
        /// Polls without progress before an attempt is abandoned for the next epoch.
        public var stallPolls: Int
        /// How long to keep delivering the commit to members that were down when it was decided.
        public var waitForDownMembers: Duration

        /// Options from their parts.
        public init(timeout: Duration = .seconds(60), stallPolls: Int = 200, waitForDownMembers: Duration = .seconds(3))
        {
            self.timeout = timeout
            self.stallPolls = stallPolls
            self.waitForDownMembers = waitForDownMembers
        }
    }

    /// What the run is for: the members and K wanted, and whether a new epoch
    /// is wanted even if they are already committed (a rotation).
    public struct Plan: Sendable, Equatable {
        /// The rack.
        public var rackId: RackId
        /// The newest committed configuration any node reports.
        public var committed: Configuration?
        /// The members wanted.
        public var members: Set<PlatformId>
        /// K.
        public var threshold: Int
        /// A new epoch even if ``members`` are committed already.
        public var alwaysNewEpoch: Bool

        /// A plan from its parts.
        public init(
            rackId: RackId, committed: Configuration?, members: Set<PlatformId>, threshold: Int, alwaysNewEpoch: Bool
        ) {
            self.rackId = rackId
            self.committed = committed
            self.members = members
            self.threshold = threshold
            self.alwaysNewEpoch = alwaysNewEpoch
        }
    }

    /// The control plane the run drives.
    public private(set) var controlPlane: ControlPlane
    /// The plan.
    public let plan: Plan
    /// The tunables.
    public let options: Options

    private let deadline: Instant
    private var available: Set<PlatformId>
    private var target = Epoch(0)
    private var lastAcks = -1
    private var announcedCommit = false
    private var graceDeadline: Instant?
    private var outstanding = 0
    private var started = false
    /// Members wanted that did not answer, since when.
    private var unreachableSince: [PlatformId: Instant] = [:]
    private var announcedUnreachable: Set<PlatformId> = []

    /// A run of `plan` from what the nodes reported (`statuses`: those that
    /// answered) and the highest epoch the operator's journal holds,
    /// starting at `now`. The run starts above both (within reach of the
    /// last commit), so it never reuses an epoch it signed.
    public init(
        plan: Plan, statuses: [NodeStatus], highestSignedEpoch: Epoch? = nil, options: Options = Options(),
        now: Instant
    ) {
        self.plan = plan
        self.options = options
        self.deadline = now.advanced(by: options.timeout)
        let highest =
            (statuses.compactMap(\.highestEpochSeen) + [highestSignedEpoch].compactMap { $0 }).max()
            ?? Epoch(0)
        let committedBy = Set(statuses.filter { $0.committedEpoch == plan.committed?.epoch }.map(\.platform))
        controlPlane = ControlPlane(
            rackId: plan.rackId,
            options: ControlPlaneOptions(stallTicks: options.stallPolls),
            resumingFrom: plan.committed,
            committedMembers: committedBy,
            highestEpoch: highest
        )
        available = Self.available(statuses)
        for member in plan.members where !available.contains(member) { unreachableSince[member] = now }
    }

    /// Nodes that answered and have not been expunged.
    public static func available(_ statuses: [NodeStatus]) -> Set<PlatformId> {
        Set(statuses.filter { $0.expunged == nil }.map(\.platform))
    }

    /// The first outputs.
    public mutating func start(now: Instant) -> [Output] {
        guard !started else { return [] }
        started = true
        var outputs: [Output] = []
        let committed = plan.committed
        let done = committed.map { Set($0.members.keys) == plan.members && $0.threshold == plan.threshold } ?? false
        if done && !plan.alwaysNewEpoch {
            outputs.append(
                .progress(
                    "epoch \(committed?.epoch ?? Epoch(0)) already has these \(plan.members.count) members; delivering missing commits"
                ))
        } else {
            do {
                if let action = try controlPlane.startReconfiguration(
                    members: plan.members, threshold: plan.threshold, available: available)
                {
                    outputs += carryOut(action)
                }
            } catch {
                return outputs + [.failed(RackOperatorError(.refused, error.description))]
            }
        }
        target = controlPlane.currentAttempt?.epoch ?? committed?.epoch ?? Epoch(0)
        return outputs + reachabilityChanged(now: now) + settleIfIdle(now: now)
    }

    /// The members wanted that do not answer now, with how long they have not.
    public func unreachable(now: Instant) -> [(PlatformId, Duration)] {
        unreachableSince.sorted { $0.key < $1.key }.map { ($0.key, $0.value.duration(to: now)) }
    }

    /// A sentence on who is unreachable, for how long, and whether the change can still commit.
    public func reachabilitySummary(now: Instant) -> String? {
        let missing = unreachable(now: now)
        guard !missing.isEmpty else { return nil }
        let quorum = ControlPlane.commitQuorum(threshold: plan.threshold, memberCount: plan.members.count)
        let reachable = plan.members.count - missing.count
        let names = missing.map { "\($0.0) (for \(Self.seconds($0.1)))" }.joined(separator: ", ")
        let verdict =
            reachable >= quorum
            ? "it can still commit"
            : "it cannot commit until \(quorum - reachable) more answer"
        return
            "unreachable: \(names); \(reachable) of \(plan.members.count) members reachable, the commit needs \(quorum) (K=\(plan.threshold) + Z=\(quorum - plan.threshold)): \(verdict)"
    }

    static func seconds(_ duration: Duration) -> String {
        let (whole, fraction) = duration.components
        return "\(whole).\(fraction / 100_000_000_000_000_000) s"
    }

    /// A progress line when the set of unreachable members changed.
    private mutating func reachabilityChanged(now: Instant) -> [Output] {
        let current = Set(unreachableSince.keys)
        guard current != announcedUnreachable else { return [] }
        let back = announcedUnreachable.subtracting(current).sorted()
        announcedUnreachable = current
        var outputs: [Output] = []
        if !back.isEmpty {
            outputs.append(.progress("reachable again: " + back.map(\.description).joined(separator: ", ")))
        }
        if let summary = reachabilitySummary(now: now) { outputs.append(.progress(summary)) }
        return outputs
    }

    /// What became of an action asked for with ``Output/carryOut(_:)``.
    public mutating func outcome(of action: ControlPlaneAction, _ outcome: ControlPlaneOutcome, now: Instant)
        -> [Output]
    {
        outstanding -= 1
        var outputs: [Output] = []
        switch (action, outcome) {
        case (.reconfigure(let coordinator, _), .refused(let code, _)):
            outputs.append(.progress("\(coordinator) refused to coordinate (\(code)); trying the next epoch"))
        case (.reconfigure(let coordinator, _), .unreachable):
            outputs.append(.progress("\(coordinator) did not answer; trying the next epoch"))
        case (.prepareAndCommit(let node, _), .refused(let code, let reason)):
            outputs.append(.progress("\(node) refused the commit: \(code): \(reason)"))
        default:
            break
        }
        if let next = controlPlane.record(action, outcome: outcome, available: available) {
            outputs += carryOut(next)
        }
        return outputs + settleIfIdle(now: now)
    }

    /// What the nodes report after a ``Output/poll`` (those that answered).
    // Swift 6.3's optimizer crashes on this function ("Found ownership error" in
    // CopyPropagation, release builds only); it runs once per poll, so leaving it
    // unoptimized costs nothing measurable.
    @_optimize(none)
    public mutating func surveyed(_ statuses: [NodeStatus], now: Instant) -> [Output] {
        var outputs: [Output] = []
        available = Self.available(statuses)
        for member in plan.members {
            if available.contains(member) {
                unreachableSince[member] = nil
            } else if unreachableSince[member] == nil {
                unreachableSince[member] = now
            }
        }
        outputs += reachabilityChanged(now: now)
        var actions: [ControlPlaneAction] = []
        if let attempt = controlPlane.currentAttempt,
            let status = statuses.first(where: { $0.platform == attempt.coordinator })
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
                        outputs.append(
                            .progress(
                                "epoch \(attempt.epoch): \(lastAcks)/\(config.memberCount) prepared (commit at \(quorum))"
                            ))
                    } else {
                        outputs.append(
                            .progress(
                                "epoch \(attempt.epoch): \(attempt.coordinator) is gathering the old epoch's shares"))
                    }
                }
                actions += controlPlane.coordinatorReported(
                    coordinating.coordinatorStatus, from: attempt.coordinator, available: available)
            }
        }
        // Confirm commits the nodes report (a node may have committed through a peer's CommitAdvance).
        if let last = controlPlane.lastCommitted {
            for status in statuses where status.committedEpoch.map({ $0 >= last.epoch }) == true {
                controlPlane.commitConfirmed(by: status.platform, epoch: last.epoch)
            }
        }
        let before = controlPlane.currentAttempt?.epoch
        actions += controlPlane.tick(available: available)
        if let after = controlPlane.currentAttempt?.epoch, after != before, let before {
            outputs.append(.progress("epoch \(before) stalled or lost its coordinator; retrying at epoch \(after)"))
            lastAcks = -1
        }
        for action in actions { outputs += carryOut(action) }
        return outputs + settleIfIdle(now: now)
    }

    private mutating func carryOut(_ action: ControlPlaneAction) -> [Output] {
        outstanding += 1
        switch action {
        case .reconfigure(let coordinator, let request):
            return [
                .progress(
                    "epoch \(request.epoch): asking \(coordinator) to coordinate N=\(request.members.count), K=\(request.threshold)"
                ),
                .carryOut(action),
            ]
        default:
            return [.carryOut(action)]
        }
    }

    /// Once every action is carried out: finished, given up, or poll again.
    private mutating func settleIfIdle(now: Instant) -> [Output] {
        guard outstanding == 0 else { return [] }
        var outputs: [Output] = []
        if let last = controlPlane.lastCommitted, last.epoch >= target, !controlPlane.isReconfiguring {
            if !announcedCommit {
                announcedCommit = true
                if last.epoch != plan.committed?.epoch {
                    outputs.append(
                        .progress("epoch \(last.epoch) committed: N=\(last.memberCount), K=\(last.threshold)"))
                }
            }
            let waiting = controlPlane.pendingCommits.intersection(available)
            // Members that are down get a grace period: a node that is rebooting is told to commit
            // when it answers again, instead of staying behind until the next operator command.
            if graceDeadline == nil { graceDeadline = now.advanced(by: options.waitForDownMembers) }
            let graceOver = graceDeadline.map { now >= $0 } ?? true
            if waiting.isEmpty && (controlPlane.pendingCommits.isEmpty || graceOver) {
                let missing = controlPlane.pendingCommits.sorted()
                if !missing.isEmpty {
                    outputs.append(
                        .progress(
                            "not reachable, will catch up when back: "
                                + missing.map(\.description).joined(separator: ", ")
                        ))
                }
                return outputs + [.finished(last)]
            }
        }
        guard now < deadline else {
            let why = reachabilitySummary(now: now).map { " (\($0))" } ?? ""
            return outputs + [
                .failed(
                    RackOperatorError(
                        .timedOut, "gave up after \(options.timeout)\(why); re-run the same command to resume"))
            ]
        }
        return outputs + [.poll]
    }
}
