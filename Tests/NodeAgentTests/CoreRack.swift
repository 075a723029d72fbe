import KeyrackCore
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// Instants of a clock the test moves by hand.
struct TestInstant: InstantProtocol {
    var offset: Duration
    func advanced(by duration: Duration) -> TestInstant { TestInstant(offset: offset + duration) }
    func duration(to other: TestInstant) -> Duration { other.offset - offset }
    static func < (lhs: TestInstant, rhs: TestInstant) -> Bool { lhs.offset < rhs.offset }
}

typealias Core = AgentCore<SeededRandomSource>

/// Cores of a rack wired together in memory: what one core sends is
/// delivered to the other as `received` on the channel between them, every
/// write succeeds unless the test says otherwise. Nothing here decides; it
/// only carries out the cores' actions, as `NodeRuntime` does.
struct CoreRack {
    let rackId: RackId
    let platforms: [PlatformId]
    var cores: [Core]
    /// Channel ids: `channel[a][b]` is a's connection to b.
    var channel: [[UInt64]]
    /// Answers to admin requests, by node and request.
    var replies: [Int: [UInt64: AdminResponse]] = [:]
    /// Every action each core asked for, in order.
    var log: [[Core.Action]]
    /// Nodes whose next ledger write fails.
    var failLedgerWrite: Set<Int> = []
    /// Nodes whose next agent-state write fails.
    var failStateWrite: Set<Int> = []
    /// Nodes that are down (receive nothing).
    var down: Set<Int> = []
    private var nextRequest: UInt64 = 0

    init(count: Int, disks: [String] = ["data0"], seed: UInt64 = 1) {
        var random = SeededRandomSource(seed: seed)
        let rack = RackId(bytes: random.bytes(RackId.byteCount))!
        rackId = rack
        platforms = (1...count).map { PlatformId(part: "kr", serial: "sn-\($0)") }
        let addresses = Dictionary(
            uniqueKeysWithValues: platforms.enumerated().map { ($1, PeerAddress(host: "127.0.0.1", port: 7000 + $0)) })
        cores = platforms.enumerated().map { index, platform in
            Core(
                settings: Core.Settings(
                    platform: platform, rackId: rack, disks: disks,
                    configuredPeers: addresses.filter { $0.key != platform },
                    listen: addresses[platform]!, attestationEnforced: true),
                state: .empty, generation: 0, agentState: AgentState(), operatorVerifier: TestOperator.key.verifier,
                random: SeededRandomSource(seed: seed &+ UInt64(index)))
        }
        channel = (0..<count).map { a in (0..<count).map { b in UInt64(a * 100 + b) } }
        log = Array(repeating: [], count: count)
    }

    /// Feeds `event` to node `index` and carries out everything that follows, across the rack.
    mutating func deliver(_ event: Core.Event, to index: Int) {
        var queue: [(Int, Core.Event)] = [(index, event)]
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            precondition(steps < 100_000, "the rack does not settle")
            let (node, event) = queue.removeFirst()
            guard !down.contains(node) else { continue }
            for action in cores[node].handle(event) {
                log[node].append(action)
                switch action {
                case .writeLedger(_, let generation):
                    if failLedgerWrite.remove(node) != nil {
                        queue.insert((node, .ledgerWriteFailed(generation: generation, reason: "disk full")), at: 0)
                    } else {
                        queue.insert((node, .ledgerWritten(generation: generation)), at: 0)
                    }
                case .saveAgentState(let state):
                    if failStateWrite.remove(node) != nil {
                        queue.insert(
                            (node, .agentStateSaveFailed(generation: state.generation, reason: "read-only")), at: 0)
                    } else {
                        queue.insert((node, .agentStateSaved(generation: state.generation)), at: 0)
                    }
                case .send(let message, let peer, let connection):
                    let target = platforms.firstIndex(of: peer)!
                    #expect(connection == channel[node][target])
                    queue.append((target, .received(message, from: platforms[node], connection: channel[target][node])))
                case .reply(let request, let response):
                    replies[node, default: [:]][request] = response
                default:
                    break
                }
            }
        }
    }

    /// Attaches every pair of nodes that are up.
    mutating func connectAll() {
        for a in cores.indices where !down.contains(a) {
            for b in cores.indices where a != b && !down.contains(b) {
                deliver(.peerAttached(platforms[b], connection: channel[a][b]), to: a)
            }
        }
    }

    /// Asks node `index` `command` over the admin API and returns its answer.
    mutating func admin(_ command: AdminCommand, to index: Int) -> AdminResponse? {
        nextRequest += 1
        let request = nextRequest
        deliver(.admin(command, request: request), to: index)
        return replies[index]?.removeValue(forKey: request)
    }

    /// The first configuration of every node, K = 2, at epoch 1.
    var initialRequest: ReconfigureRequest {
        ReconfigureRequest(
            rackId: rackId, epoch: Epoch(1), lastCommittedEpoch: nil, members: Set(platforms), threshold: 2)
    }

    /// `request` as the operator's ticket for node `index`.
    func ticket(_ request: ReconfigureRequest, for index: Int) -> SignedTicket {
        TestOperator.ticket(request, coordinator: platforms[index])
    }

    /// Every status, of the nodes that are up.
    func statuses() -> [NodeStatus] { cores.indices.filter { !down.contains($0) }.map { cores[$0].status() } }

    /// Runs an operator command to completion against the cores, with a test
    /// clock that moves 50 ms per poll. Returns the outputs it produced.
    mutating func operate(
        members: Set<PlatformId>, threshold: Int, alwaysNewEpoch: Bool = false, downOnceStarted: Set<Int> = [],
        options: OperatorRun<TestInstant>.Options = .init(timeout: .seconds(10), waitForDownMembers: .milliseconds(200))
    ) -> [OperatorRun<TestInstant>.Output] {
        var now = TestInstant(offset: .zero)
        let statuses = self.statuses()
        let committed = statuses.compactMap(\.latestCommitted).max { $0.epoch < $1.epoch }
        var run = OperatorRun(
            plan: .init(
                rackId: rackId, committed: committed, members: members, threshold: threshold,
                alwaysNewEpoch: alwaysNewEpoch),
            statuses: statuses, options: options, now: now)
        down.formUnion(downOnceStarted)
        var outputs = run.start(now: now)
        var all: [OperatorRun<TestInstant>.Output] = []
        var steps = 0
        while !outputs.isEmpty {
            steps += 1
            precondition(steps < 100_000, "the operator does not finish")
            let output = outputs.removeFirst()
            all.append(output)
            switch output {
            case .carryOut(let action):
                let index = platforms.firstIndex(of: action.target)!
                let outcome: ControlPlaneOutcome
                if down.contains(index) {
                    outcome = .unreachable
                } else {
                    let command: AdminCommand
                    switch try! action.signed(by: TestOperator.key) {
                    case .reconfigure(let ticket): command = .reconfigure(ticket)
                    case .commit(_, let epoch, let signature): command = .commit(epoch, signature)
                    case .prepareAndCommit(_, let signed): command = .prepareAndCommit(signed)
                    case .upgradeFromLrtq:
                        Issue.record("the operator never upgrades from LRTQ")
                        return all
                    }
                    let reply = admin(command, to: index)
                    if let error = reply?.error {
                        outcome = .refused(code: error.code.rawValue, reason: error.reason)
                    } else {
                        outcome = .done
                    }
                }
                outputs += run.outcome(of: action, outcome, now: now)
            case .poll:
                now = now.advanced(by: .milliseconds(50))
                outputs += run.surveyed(self.statuses(), now: now)
            case .progress, .finished, .failed:
                break
            }
        }
        return all
    }
}

extension Array where Element == OperatorRun<TestInstant>.Output {
    /// The configuration the run finished with.
    var finished: Configuration? {
        for output in self { if case .finished(let configuration) = output { return configuration } }
        return nil
    }
    /// Why the run failed.
    var failure: RackOperatorError? {
        for output in self { if case .failed(let error) = output { return error } }
        return nil
    }
}
