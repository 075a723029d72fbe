import KeyrackCore
import NodeAgent
import Testing
import TrustQuorum

@Suite("OperatorRun: the operator's driver, with values and a test clock")
struct OperatorRunTests {
    static func progress(_ outputs: [OperatorRun<TestInstant>.Output]) -> [String] {
        outputs.compactMap { if case .progress(let line) = $0 { line } else { nil } }
    }

    static func reconfiguration(_ action: ControlPlaneAction) -> (PlatformId, ReconfigureRequest)? {
        if case .reconfigure(let coordinator, let request) = action { return (coordinator, request) }
        return nil
    }

    static func commit(_ action: ControlPlaneAction) -> (PlatformId, Epoch)? {
        if case .commit(let member, let config) = action { return (member, config.epoch) }
        return nil
    }

    @Test("a run that is already committed delivers the missing commits only")
    func alreadyCommitted() throws {
        var rack = try AgentCoreTests.setUp()
        let again = rack.operate(members: Set(rack.platforms), threshold: 2)
        #expect(again.finished?.epoch == Epoch(1))
        #expect(!again.contains { if case .carryOut(.reconfigure) = $0 { true } else { false } })
        #expect(Self.progress(again).first?.contains("already has these 3 members") == true)
    }

    @Test("a coordinator that cannot be reached is replaced at the next epoch")
    func unreachableCoordinator() throws {
        var rack = try AgentCoreTests.setUp(5)
        // Epoch 2's coordinator is chosen by epoch among the committed members: take it down.
        let coordinator = Set(rack.platforms).sorted()[2 % 5]
        let outputs = rack.operate(
            members: Set(rack.platforms), threshold: 3, alwaysNewEpoch: true,
            downOnceStarted: [rack.platforms.firstIndex(of: coordinator)!])
        let asked = outputs.compactMap { output -> PlatformId? in
            if case .carryOut(.reconfigure(let who, _)) = output { return who }
            return nil
        }
        #expect(asked.first == coordinator)
        #expect(asked.count >= 2 && asked[1] != coordinator)
        let committed = try #require(outputs.finished)
        #expect(committed.epoch > Epoch(2))
        // The member that is down is named once the grace period is over.
        #expect(Self.progress(outputs).last == "not reachable, will catch up when back: \(coordinator)")
    }

    @Test("a commit refused as not prepared is sent as prepareAndCommit next")
    func notPreparedBecomesPrepareAndCommit() throws {
        var rack = try AgentCoreTests.setUp()
        var plane = ControlPlane(
            rackId: rack.rackId, resumingFrom: rack.cores[0].status().latestCommitted,
            committedMembers: Set(rack.platforms), highestEpoch: Epoch(1))
        let available = Set(rack.platforms)
        let started = try plane.startReconfiguration(members: available, threshold: 2, available: available)
        let action = try #require(started)
        let (coordinator, request) = try #require(Self.reconfiguration(action))
        let index = rack.platforms.firstIndex(of: coordinator)!
        #expect(rack.admin(.reconfigure(rack.ticket(request, for: index)), to: index)?.error == nil)
        #expect(plane.record(action, outcome: .done, available: available) == nil)
        let status = try #require(rack.cores[index].status().coordinating)
        let commits = plane.coordinatorReported(status.coordinatorStatus, from: coordinator, available: available)
        let first = try #require(commits.first)
        let (member, epoch) = try #require(Self.commit(first))
        _ = plane.record(
            first, outcome: .refused(code: CommitError.Code.notPrepared.rawValue, reason: "not prepared"),
            available: available)
        let resent = plane.tick(available: [member])
        let committed = try #require(plane.lastCommitted)
        #expect(resent.contains(.prepareAndCommit(member, committed)))
        #expect(epoch == Epoch(2))
    }

    @Test("coordinators that keep refusing: retried at new epochs, then the control plane waits for the next tick")
    func refusalsCapped() throws {
        let members = (1...4).map { PlatformId(part: "kr", serial: "sn-\($0)") }
        var random = SeededRandomSource(seed: 3)
        let bytes = random.bytes(RackId.byteCount)
        let rackId = try #require(RackId(bytes: bytes))
        var plane = ControlPlane(rackId: rackId)
        let available = Set(members)
        var action = try plane.startReconfiguration(members: available, threshold: 3, available: available)
        var epochs: [Epoch] = []
        while let current = action, epochs.count < 10 {
            if case .reconfigure(_, let request) = current { epochs.append(request.epoch) }
            action = plane.record(current, outcome: .refused(code: "TQ-RECONF-X", reason: "no"), available: available)
        }
        #expect(epochs == [Epoch(1), Epoch(2), Epoch(3), Epoch(4)])
        #expect(plane.isReconfiguring)
        #expect(plane.currentAttempt == nil)
        let retry = plane.tick(available: available)
        #expect(retry.count == 1)
        #expect(plane.currentAttempt?.epoch == Epoch(5))
    }

    @Test("a run that cannot commit gives up at its timeout on the test clock, saying it can be re-run")
    func givesUp() throws {
        var rack = try AgentCoreTests.setUp(5)
        rack.down = [1, 2, 3]  // K + Z = 4 acknowledgements cannot be had
        let outputs = rack.operate(
            members: Set(rack.platforms), threshold: 3, alwaysNewEpoch: true,
            options: .init(timeout: .seconds(2), stallPolls: 5, waitForDownMembers: .milliseconds(100)))
        let failure = try #require(outputs.failure)
        #expect(failure.code == .timedOut)
        #expect(failure.reason.contains("re-run the same command"))
        // It says who did not answer, for how long, and that the change could not commit without them.
        for index in [1, 2, 3] { #expect(failure.reason.contains("\(rack.platforms[index]) (for ")) }
        #expect(failure.reason.contains("2 of 5 members reachable, the commit needs 4 (K=3 + Z=1)"))
        #expect(failure.reason.contains("it cannot commit until 2 more answer"))
        #expect(outputs.finished == nil)
        let polls = outputs.filter { $0 == .poll }.count
        #expect(polls == 40)  // 2 s at 50 ms a poll
    }

    @Test("members that stop answering are named once, with whether the change can still commit, and again when back")
    func partitionAware() throws {
        var rack = try AgentCoreTests.setUp(5)
        let coordinator = Set(rack.platforms).sorted()[2 % 5]
        let partitioned = rack.platforms.indices.first { rack.platforms[$0] != coordinator }!
        rack.down = [partitioned]
        let outputs = rack.operate(
            members: Set(rack.platforms), threshold: 3, alwaysNewEpoch: true,
            options: .init(timeout: .seconds(10), stallPolls: 50, waitForDownMembers: .milliseconds(100)))
        #expect(outputs.finished != nil)
        let lines = Self.progress(outputs).filter { $0.hasPrefix("unreachable: ") }
        #expect(lines.count == 1)
        #expect(
            lines.first?.hasSuffix(
                "4 of 5 members reachable, the commit needs 4 (K=3 + Z=1): it can still commit") == true)
        #expect(lines.first?.contains("\(rack.platforms[partitioned]) (for 0.0 s)") == true)
    }

    @Test("a member's absence is timed on the run's clock")
    func unreachableDurations() throws {
        let members = (1...3).map { PlatformId(part: "kr", serial: "sn-\($0)") }
        let rackId = try #require(RackId(bytes: Array(repeating: 7, count: RackId.byteCount)))
        let start = TestInstant(offset: .zero)
        var run = OperatorRun(
            plan: .init(rackId: rackId, committed: nil, members: Set(members), threshold: 2, alwaysNewEpoch: false),
            statuses: [], now: start)
        #expect(
            run.unreachable(now: start.advanced(by: .milliseconds(2500))).map(\.1)
                == Array(repeating: .milliseconds(2500), count: 3))
        #expect(
            run.reachabilitySummary(now: start.advanced(by: .milliseconds(2500)))?.contains("sn-1 (for 2.5 s)") == true)
        _ = run.start(now: start)
        #expect(run.reachabilitySummary(now: start)?.hasSuffix("it cannot commit until 2 more answer") == true)
    }

    @Test("members out of range are refused before anything is sent")
    func refusedGoal() throws {
        var rack = CoreRack(count: 3)
        let outputs = rack.operate(members: Set(rack.platforms.prefix(2)), threshold: 2)
        #expect(outputs.failure?.code == .refused)
        #expect(!outputs.contains { if case .carryOut = $0 { true } else { false } })
    }

    @Test("the backoff doubles up to its maximum, jitters within ±20 %, and resets")
    func backoff() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .milliseconds(400))
        var random = SeededRandomSource(seed: 5)
        var delays: [Duration] = []
        for _ in 0..<5 { delays.append(backoff.nextDelay(using: &random)) }
        let centres: [Duration] = [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(400), .milliseconds(400),
        ]
        for (delay, centre) in zip(delays, centres) {
            #expect(delay >= centre * 0.8 && delay <= centre * 1.2)
        }
        backoff.failed()
        #expect(backoff.shouldLogFailure)
        for _ in 0..<8 { backoff.failed() }
        #expect(!backoff.shouldLogFailure)
        backoff.failed()
        #expect(backoff.failures == 10 && backoff.shouldLogFailure)
        backoff.reset()
        #expect(backoff.current == .milliseconds(100) && backoff.failures == 0)
    }
}
