import KeyrackCore
import SecretSharing
import TrustQuorum

/// The parameters of a run. With the event list, they determine it exactly.
public struct SimulationOptions: Sendable, Equatable, Codable {
    /// The number of initial members, 3…32.
    public var nodes: Int
    /// The seed of both the event generator and the nodes' randomness.
    public var seed: UInt64
    /// How many random events to generate before healing and checking liveness.
    public var events: Int
    /// The faults to inject.
    public var faults: FaultSet
    /// Nodes outside the initial configuration that the operator may add.
    public var spareNodes: Int
    /// Control-plane ticks without progress before a reconfiguration is retried.
    public var stallTicks: Int
    /// Whether every message goes through the wire format (encoded into a
    /// frame and decoded again) on its way, as it would on a real network.
    public var wireEncoding: Bool
    /// Whether the rack starts in the legacy mode (LRTQ), set up by a dealer,
    /// with the upgrade to the trust quorum among the random actions.
    public var startInLrtq: Bool

    /// Options for a run; `nodes` must be 3…32.
    public init(
        nodes: Int,
        seed: UInt64,
        events: Int,
        faults: FaultSet = .all,
        spareNodes: Int = 4,
        stallTicks: Int = 25,
        wireEncoding: Bool = false,
        startInLrtq: Bool = false
    ) {
        self.nodes = nodes
        self.seed = seed
        self.events = events
        self.faults = faults
        self.spareNodes = spareNodes
        self.stallTicks = stallTicks
        self.wireEncoding = wireEncoding
        self.startInLrtq = startInLrtq
    }

    private enum CodingKeys: String, CodingKey {
        case nodes, seed, events, faults, spareNodes, stallTicks, wireEncoding, startInLrtq
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            nodes: try container.decode(Int.self, forKey: .nodes),
            seed: try container.decode(UInt64.self, forKey: .seed),
            events: try container.decode(Int.self, forKey: .events),
            faults: try container.decode(FaultSet.self, forKey: .faults),
            spareNodes: try container.decode(Int.self, forKey: .spareNodes),
            stallTicks: try container.decode(Int.self, forKey: .stallTicks),
            wireEncoding: try container.decodeIfPresent(Bool.self, forKey: .wireEncoding) ?? false,
            startInLrtq: try container.decodeIfPresent(Bool.self, forKey: .startInLrtq) ?? false
        )
    }
}

/// The outcome of a run.
public struct SimulationReport: Sendable, Equatable, Codable {
    /// Events applied, the final healing phase included.
    public var events: Int
    /// Configurations the control plane committed.
    public var epochsCommitted: Int
    /// Alarms raised by nodes.
    public var alarms: Int
    /// Invariant violations (the run stops at the first).
    public var violations: [Violation]
    /// Whether, with faults healed, every member committed the last
    /// configuration, loaded the same secret, and could read older epochs.
    public var liveness: Bool
    /// Why liveness failed, if it did.
    public var livenessDetail: String?
    /// Messages the nodes sent.
    public var messagesSent: Int
    /// Warnings the nodes raised (LRTQ deprecation warnings).
    public var warnings: Int
    /// Nodes added under LRTQ, each with a spare share.
    public var lrtqNodesAdded: Int
    /// For a run started in LRTQ: whether the upgrade committed and every
    /// member of the last configuration read the LRTQ secret as epoch 1.
    /// `nil` for a run that did not start in LRTQ, or stopped early.
    public var lrtqSecretReadable: Bool?
}

/// A deterministic simulation of a rack: nodes, the control plane, a
/// network with one FIFO queue per directed link, faults and an operator.
///
/// Every step is a ``SimulationEvent`` drawn from a generator seeded by
/// ``SimulationOptions/seed``; the nodes' own randomness comes from a
/// separate stream of the same seed, so replaying the event list reproduces
/// the run exactly. The invariants are checked after every event.
public final class Simulator {
    /// The parameters.
    public let options: SimulationOptions
    /// Every event applied so far.
    public private(set) var log: [SimulationEvent] = []
    /// The first violation seen, if any.
    public private(set) var violations: [Violation] = []
    /// The control plane.
    public private(set) var controlPlane: ControlPlane
    /// Messages sent by nodes so far.
    public private(set) var messagesSent = 0
    /// Alarms raised so far.
    public private(set) var alarmCount = 0
    /// Warnings raised so far (LRTQ deprecation warnings, one per use).
    public private(set) var warningCount = 0
    /// Nodes added under LRTQ (each handed a spare share) so far.
    public private(set) var lrtqNodesAdded = 0

    let rackId: RackId
    let ids: [PlatformId]
    let indexOf: [PlatformId: Int]
    var nodes: [SimNode]
    private var queues: [LinkQueue]
    private var activeLinks: [Int] = []
    private var activePosition: [Int]
    private var linkUp: [Bool]
    private var partitionMask: UInt64?
    private var protocolRandom: SeededRandomSource
    private var eventRandom: SplitMix64
    private var loadedSecrets: [Epoch: RackSecret] = [:]
    private var loadedBy: [Int: Epoch] = [:]
    private var lastLoad: RackSecret?
    private var targetMembers: Set<Int>
    private var checker = InvariantChecker()
    private var views: [NodeView] = []
    private var dirty: [Bool] = []
    private var dirtyList: [Int] = []
    private var controlPlaneChanged = true
    private var retired: Set<Int> = []
    /// The LRTQ secret, kept from the dealer's setup to check the upgrade.
    private var lrtqSecret: RackSecret?
    private var lrtqSecretReadable: Bool?
    /// A deliberately broken node variant, for tests of the checks and the
    /// debugger only: sees each node's output before the simulator carries
    /// it out, and may change it. `nil` in every real run.
    public var outputTamper: (@Sendable (_ node: Int, _ output: inout NodeOutput) -> Void)?

    struct SimNode {
        var node: Node
        var persisted: PersistentState
        var up = true
        var downUntilEpoch: Epoch?
        var alarms: [Alarm] = []
    }

    struct LinkQueue {
        var items: [Message] = []
        var head = 0
        var isEmpty: Bool { head == items.count }
        var count: Int { items.count - head }

        mutating func push(_ message: Message) { items.append(message) }

        mutating func pop() -> Message? {
            guard head < items.count else { return nil }
            let message = items[head]
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            }
            return message
        }

        func peek() -> Message? { head < items.count ? items[head] : nil }

        mutating func clear() {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    /// A simulator with `options.nodes` members-to-be and the spare nodes, all up.
    public init(options: SimulationOptions) {
        precondition((3...32).contains(options.nodes), "nodes must be 3…32")
        self.options = options
        var setupRandom = SeededRandomSource(seed: options.seed ^ 0x7271_7261_636B_2D69)
        rackId = RackId.random(using: &setupRandom)
        protocolRandom = SeededRandomSource(seed: options.seed ^ 0x5452_5553_5451_5552)
        eventRandom = SplitMix64(seed: options.seed)
        let count = min(options.nodes + max(0, options.spareNodes), 64)
        ids = (0..<count).map { PlatformId(part: "913-0000019", serial: "BRM42" + String(100 + $0)) }
        var indexOf: [PlatformId: Int] = [:]
        for (index, id) in ids.enumerated() { indexOf[id] = index }
        self.indexOf = indexOf
        let rack = rackId
        var legacy: [PlatformId: LrtqState] = [:]
        if options.startInLrtq {
            // 3…32 initial members: within LRTQ's limits.
            let setup = try! Lrtq.setUp(rackId: rackId, members: Set(ids.prefix(options.nodes)), using: &setupRandom)
            legacy = setup.states
            lrtqSecret = setup.secret
        }
        nodes = ids.map { id in
            let state = legacy[id].map {
                PersistentState(lrtq: $0, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
            }
            return SimNode(
                node: Node(platformId: id, rackId: rack, persistentState: state ?? .empty),
                persisted: state ?? .empty
            )
        }
        queues = Array(repeating: LinkQueue(), count: count * count)
        activePosition = Array(repeating: -1, count: count * count)
        linkUp = Array(repeating: false, count: count * count)
        controlPlane = ControlPlane(
            rackId: rackId,
            options: ControlPlaneOptions(stallTicks: options.stallTicks, maximumMembers: 32),
            startingInLrtq: options.startInLrtq
        )
        targetMembers = Set(0..<options.nodes)
        available = Set(ids)
        dirty = Array(repeating: false, count: count)
        views = ids.map { NodeView(id: $0, state: .empty) }
        for index in 0..<count { markDirty(index) }
        updateConnectivity()
    }

    var firstActiveLink: Int? { activeLinks.first }

    // MARK: - Running

    /// Generates and applies `options.events` events, then heals and checks
    /// liveness. Stops at the first violation.
    public static func run(_ options: SimulationOptions) -> SimulationReport {
        let simulator = Simulator(options: options)
        simulator.apply(.rotate)
        while simulator.log.count < options.events && simulator.violations.isEmpty {
            simulator.apply(simulator.nextEvent())
        }
        return simulator.finish()
    }

    /// Applies a recorded event list (from ``log``) to a fresh simulator and
    /// reports as a run would, without generating or healing anything;
    /// liveness is whether the final state is settled.
    public static func replay(_ options: SimulationOptions, events: [SimulationEvent]) -> (
        SimulationReport, Simulator
    ) {
        let simulator = Simulator(options: options)
        for event in events where simulator.violations.isEmpty { simulator.apply(event) }
        // The logged run ends with its healing phase: check that the state it
        // reached is settled (every member committed and loaded the last epoch).
        let problem = simulator.violations.isEmpty ? simulator.unsettled() : "stopped at a violation"
        return (simulator.report(liveness: problem == nil, detail: problem), simulator)
    }

    func report(liveness: Bool, detail: String?) -> SimulationReport {
        SimulationReport(
            events: log.count,
            epochsCommitted: controlPlane.epochsCommitted,
            alarms: alarmCount,
            violations: violations,
            liveness: liveness,
            livenessDetail: detail,
            messagesSent: messagesSent,
            warnings: warningCount,
            lrtqNodesAdded: lrtqNodesAdded,
            lrtqSecretReadable: lrtqSecretReadable
        )
    }

    /// A digest of the cluster's persistent states and loaded secrets, to
    /// compare a run with its replay.
    public var stateSummary: String {
        var parts: [String] = []
        for (index, node) in nodes.enumerated() {
            let state = node.persisted
            let epochs = state.configurations.keys.sorted().map(\.description).joined(separator: ",")
            let fingerprints = state.configurations.keys.sorted()
                .map { state.configurations[$0]!.fingerprint.hexString.prefix(8) }.joined(separator: ",")
            parts.append(
                "\(index):c=\(state.latestCommittedEpoch?.description ?? "-"):e=\(epochs):f=\(fingerprints):x=\(state.expunged != nil)"
            )
        }
        parts.append("cp=\(controlPlane.lastCommitted?.epoch.description ?? "-"):\(controlPlane.epochsCommitted)")
        parts.append("sent=\(messagesSent)")
        return parts.joined(separator: ";")
    }

    // MARK: - Generating events

    /// Draws the next event from the generator, given the current state.
    func nextEvent() -> SimulationEvent {
        let faults = options.faults
        let linkFault = !activeLinks.isEmpty
        var table: [(Int, Kind)] = []
        if linkFault { table.append((600, .deliver)) }
        if linkFault && faults.contains(.drop) { table.append((12, .drop)) }
        if linkFault && faults.contains(.duplicate) { table.append((12, .duplicate)) }
        if linkFault && faults.contains(.reorder) { table.append((12, .reorder)) }
        table.append((60, .tick))
        table.append((20, .load))
        if controlPlane.inLrtq {
            // LRTQ has no rotation and no removal; nodes may be added, and
            // the rack may be upgraded.
            table.append((1, .upgrade))
            table.append((2, .add))
        } else {
            table.append((3, .rotate))
            // Membership drifts around the initial size.
            table.append((targetMembers.count < options.nodes ? 2 : 1, .add))
            table.append((targetMembers.count > options.nodes ? 2 : 1, .remove))
        }
        if faults.contains(.partition) { table.append((partitionMask == nil ? 3 : 10, .partitionOrHeal)) }
        if faults.contains(.crash) {
            table.append((5, .crash))
            table.append((1, .crashLong))
            table.append((12, .restart))
        }
        let total = table.reduce(0) { $0 + $1.0 }
        var roll = Int(eventRandom.next() % UInt64(total))
        var kind = Kind.tick
        for (weight, candidate) in table {
            if roll < weight {
                kind = candidate
                break
            }
            roll -= weight
        }
        return event(for: kind) ?? .tick
    }

    private enum Kind {
        case deliver, drop, duplicate, reorder, tick, load, rotate, add, remove, partitionOrHeal, crash, crashLong,
            restart, upgrade
    }

    private func randomElement<T>(_ array: [T]) -> T? {
        array.isEmpty ? nil : array[Int(eventRandom.next() % UInt64(array.count))]
    }

    private func event(for kind: Kind) -> SimulationEvent? {
        let count = nodes.count
        switch kind {
        case .deliver, .drop, .duplicate, .reorder:
            guard let link = randomElement(activeLinks) else { return nil }
            let (from, to) = (link / count, link % count)
            switch kind {
            case .drop: return .drop(from: from, to: to)
            case .duplicate: return .duplicate(from: from, to: to)
            case .reorder: return .reorder(from: from, to: to)
            default: return .deliver(from: from, to: to)
            }
        case .tick:
            return .tick
        case .load:
            let candidates = (0..<count).filter {
                nodes[$0].up && (nodes[$0].persisted.latestCommittedEpoch != nil || nodes[$0].node.isInLrtq)
            }
            guard let node = randomElement(candidates) else { return nil }
            guard let latest = nodes[node].persisted.latestCommittedEpoch else {
                return .loadSecret(node: node, epoch: Epoch.lrtq.value)  // unlocking under LRTQ
            }
            let older = (options.startInLrtq ? [Epoch.lrtq] : []) + controlPlane.committedEpochs
            if eventRandom.next() % 4 == 0, let older = randomElement(older), older <= latest {
                return .loadSecret(node: node, epoch: older.value)
            }
            return .loadSecret(node: node, epoch: latest.value)
        case .rotate:
            return controlPlane.isReconfiguring ? nil : .rotate
        case .upgrade:
            return controlPlane.isReconfiguring ? nil : .upgradeFromLrtq
        case .add:
            guard !controlPlane.isReconfiguring, targetMembers.count < 32 else { return nil }
            let spares = (0..<count).filter { !targetMembers.contains($0) }
            return randomElement(spares).map { .addNode(node: $0) }
        case .remove:
            guard !controlPlane.isReconfiguring, targetMembers.count > 3 else { return nil }
            return randomElement(targetMembers.sorted()).map { .removeNode(node: $0) }
        case .partitionOrHeal:
            if partitionMask != nil { return .heal }
            var mask: UInt64 = 0
            for index in 0..<count where eventRandom.next() % 2 == 0 { mask |= 1 << UInt64(index) }
            return .partition(mask: mask)
        case .crash, .crashLong:
            let down = (0..<count).filter { !nodes[$0].up }.count
            guard down < max(1, options.nodes / 3) else { return nil }
            guard let node = randomElement((0..<count).filter { nodes[$0].up }) else { return nil }
            if kind == .crashLong { return .crashForEpochs(node: node, epochs: 2 + Int(eventRandom.next() % 4)) }
            return .crash(node: node)
        case .restart:
            let epoch = controlPlane.highestEpoch
            let candidates = (0..<count).filter { index in
                !nodes[index].up && (nodes[index].downUntilEpoch.map { $0 <= epoch } ?? true)
            }
            return randomElement(candidates).map { .restart(node: $0) }
        }
    }

    // MARK: - Applying events

    /// Applies one event and checks the invariants.
    public func apply(_ event: SimulationEvent) {
        log.append(event)
        let count = nodes.count
        func valid(_ index: Int) -> Bool { (0..<count).contains(index) }
        switch event {
        case .deliver(let from, let to):
            guard valid(from), valid(to), let message = pop(from, to) else { break }
            nodes[to].node.received(from: ids[from], message: message)
            process(to)
        case .drop(let from, let to):
            guard valid(from), valid(to) else { break }
            _ = pop(from, to)
        case .duplicate(let from, let to):
            guard valid(from), valid(to), let message = queues[from * count + to].peek() else { break }
            nodes[to].node.received(from: ids[from], message: message)
            process(to)
        case .reorder(let from, let to):
            guard valid(from), valid(to), let message = pop(from, to) else { break }
            push(message, from, to)
        case .partition(let mask):
            partitionMask = mask
            updateConnectivity()
        case .heal:
            partitionMask = nil
            updateConnectivity()
        case .crash(let node):
            guard valid(node) else { break }
            crash(node)
        case .crashForEpochs(let node, let epochs):
            guard valid(node) else { break }
            crash(node)
            let span = UInt64(min(max(0, epochs), 1_000_000))
            nodes[node].downUntilEpoch = Epoch(controlPlane.highestEpoch.value &+ span)
        case .restart(let node):
            guard valid(node), !nodes[node].up else { break }
            nodes[node].node = Node(platformId: ids[node], rackId: rackId, persistentState: nodes[node].persisted)
            nodes[node].up = true
            available.insert(ids[node])
            nodes[node].downUntilEpoch = nil
            process(node)
            updateConnectivity()
        case .reconnectAll:
            updateConnectivity(bounce: true)
        case .tick:
            controlPlaneStep()
        case .rotate:
            startReconfiguration(targetMembers)
        case .addNode(let node) where controlPlane.inLrtq:
            guard valid(node), !targetMembers.contains(node), !controlPlane.isReconfiguring else { break }
            addUnderLrtq(node)
        case .addNode(let node):
            guard valid(node), !targetMembers.contains(node), !controlPlane.isReconfiguring else { break }
            if retired.contains(node) {
                // A removed node is wiped before it joins again.
                retired.remove(node)
                nodes[node].persisted = .empty
                nodes[node].node = Node(platformId: ids[node], rackId: rackId)
                loadedBy[node] = nil
                markDirty(node)
                if nodes[node].up { updateConnectivity(bouncing: node) }
            }
            startReconfiguration(targetMembers.union([node]))
        case .removeNode(let node):
            guard valid(node) else { break }
            if startReconfiguration(targetMembers.subtracting([node])) { retired.insert(node) }
        case .loadSecret(let node, let epoch):
            guard valid(node) else { break }
            load(node, Epoch(epoch))
        case .upgradeFromLrtq:
            startUpgrade(targetMembers)
        }
        checkInvariants()
    }

    private func pop(_ from: Int, _ to: Int) -> Message? {
        let link = from * nodes.count + to
        let message = queues[link].pop()
        if queues[link].isEmpty { deactivate(link) }
        return message
    }

    private func push(_ message: Message, _ from: Int, _ to: Int) {
        let link = from * nodes.count + to
        queues[link].push(message)
        if activePosition[link] < 0 {
            activePosition[link] = activeLinks.count
            activeLinks.append(link)
        }
    }

    /// The messages waiting on the link `from → to`, oldest first (for the debugger).
    func queuedMessages(from: Int, to: Int) -> [Message] {
        let queue = queues[from * nodes.count + to]
        return Array(queue.items[queue.head...])
    }

    private func deactivate(_ link: Int) {
        let position = activePosition[link]
        guard position >= 0 else { return }
        let last = activeLinks.removeLast()
        if last != link {
            activeLinks[position] = last
            activePosition[last] = position
        }
        activePosition[link] = -1
    }

    /// Carries out a node's output: persist first, then send, and record alarms.
    private func process(_ index: Int) {
        markDirty(index)
        var output = nodes[index].node.drainOutput()
        outputTamper?(index, &output)
        if output.persistentStateChanged { nodes[index].persisted = nodes[index].node.persistentState }
        if !output.alarms.isEmpty {
            nodes[index].alarms += output.alarms
            alarmCount += output.alarms.count
        }
        warningCount += output.warnings.count
        for outgoing in output.messages {
            messagesSent += 1
            guard let to = indexOf[outgoing.to], linkUp[index * nodes.count + to] else { continue }
            var message = outgoing.message
            if options.wireEncoding {
                switch InvariantChecker.checkWireRoundTrip(message) {
                case .success(let decoded):
                    message = decoded
                case .failure(var violation):
                    violation.eventIndex = log.count - 1
                    violations.append(violation)
                    continue
                }
            }
            push(message, index, to)
        }
    }

    private func crash(_ index: Int) {
        guard nodes[index].up else { return }
        nodes[index].up = false
        loadedBy[index] = nil  // its cached secrets are gone
        markDirty(index)
        available.remove(ids[index])
        nodes[index].node = Node(platformId: ids[index], rackId: rackId, persistentState: nodes[index].persisted)
        _ = nodes[index].node.drainOutput()
        updateConnectivity()
    }

    /// The nodes that are up, as the control plane sees them.
    private var available: Set<PlatformId> = []

    /// Opens and closes links to match who is up and the partition; with
    /// `bounce`, closes every open link first.
    private func updateConnectivity(bounce: Bool = false) {
        let count = nodes.count
        for a in 0..<count {
            for b in (a + 1)..<count {
                let sameSide = partitionMask.map { (($0 >> UInt64(a)) & 1) == (($0 >> UInt64(b)) & 1) } ?? true
                let shouldBeUp = nodes[a].up && nodes[b].up && sameSide
                let isUp = linkUp[a * count + b]
                if isUp && (!shouldBeUp || bounce) { closeLink(a, b) }
                if shouldBeUp && !linkUp[a * count + b] { openLink(a, b) }
            }
        }
    }

    /// Closes and reopens every link of `node` (it was replaced by a fresh process).
    private func updateConnectivity(bouncing node: Int) {
        let count = nodes.count
        for other in 0..<count where other != node && linkUp[node * count + other] {
            closeLink(min(node, other), max(node, other))
        }
        updateConnectivity()
    }

    private func closeLink(_ a: Int, _ b: Int) {
        let count = nodes.count
        linkUp[a * count + b] = false
        linkUp[b * count + a] = false
        for link in [a * count + b, b * count + a] {
            queues[link].clear()
            deactivate(link)
        }
        if nodes[a].up {
            nodes[a].node.disconnected(ids[b])
            process(a)
        }
        if nodes[b].up {
            nodes[b].node.disconnected(ids[a])
            process(b)
        }
    }

    private func openLink(_ a: Int, _ b: Int) {
        let count = nodes.count
        linkUp[a * count + b] = true
        linkUp[b * count + a] = true
        nodes[a].node.connected(ids[b])
        process(a)
        nodes[b].node.connected(ids[a])
        process(b)
    }

    @discardableResult
    private func startReconfiguration(_ members: Set<Int>) -> Bool {
        controlPlaneChanged = true
        let action: ControlPlaneAction?
        do {
            action = try controlPlane.startReconfiguration(members: Set(members.map { ids[$0] }), available: available)
        } catch {
            return false
        }
        targetMembers = members
        if let action { execute([action]) }
        return true
    }

    /// The operator asks for the upgrade from LRTQ with the current members.
    private func startUpgrade(_ members: Set<Int>) {
        controlPlaneChanged = true
        let action: ControlPlaneAction?
        do {
            action = try controlPlane.startUpgradeFromLrtq(members: Set(members.map { ids[$0] }), available: available)
        } catch {
            return
        }
        if let action { execute([action]) }
    }

    /// Adds `node` under LRTQ: the first member that is up and has a spare
    /// share hands one over (once it has rebuilt the LRTQ secret; until
    /// then the event only starts that, and the operator tries again later).
    private func addUnderLrtq(_ node: Int) {
        for donor in targetMembers.sorted() where nodes[donor].up {
            guard nodes[donor].node.persistentState.lrtq?.spareShares.isEmpty == false else { continue }
            let package: LrtqState?
            do {
                package = try nodes[donor].node.handOutLrtqSpareShare()
            } catch {
                process(donor)
                continue
            }
            process(donor)
            guard let package else { return }
            let state = PersistentState(
                lrtq: package, configurations: [:], shares: [:], committedEpochs: [], expunged: nil)
            nodes[node].persisted = state
            nodes[node].node = Node(platformId: ids[node], rackId: rackId, persistentState: state)
            loadedBy[node] = nil
            markDirty(node)
            targetMembers.insert(node)
            lrtqNodesAdded += 1
            if nodes[node].up {
                process(node)
                updateConnectivity(bouncing: node)
            }
            return
        }
    }

    private func controlPlaneStep() {
        controlPlaneChanged = true
        let available = self.available
        var actions: [ControlPlaneAction] = []
        if let (_, coordinator) = controlPlane.currentAttempt, let index = indexOf[coordinator], nodes[index].up,
            let status = nodes[index].node.coordinatorStatus
        {
            actions += controlPlane.coordinatorReported(status, from: coordinator, available: available)
        }
        actions += controlPlane.tick(available: available)
        execute(actions)
    }

    /// Carries out the control plane's actions on the nodes that are up and
    /// tells the control plane what became of each (``ControlPlane/record(_:outcome:available:)``,
    /// the same call the operator makes), following the retries it returns.
    private func execute(_ actions: [ControlPlaneAction]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            guard let index = indexOf[action.target], nodes[index].up else { continue }
            let outcome = carryOut(action, on: index)
            process(index)
            if let next = controlPlane.record(action, outcome: outcome, available: available) {
                queue.append(next)
            }
        }
    }

    /// Asks node `index` to do `action`.
    private func carryOut(_ action: ControlPlaneAction, on index: Int) -> ControlPlaneOutcome {
        do {
            switch action {
            case .reconfigure(_, let request):
                try nodes[index].node.reconfigure(request, using: &protocolRandom)
            case .upgradeFromLrtq(_, let request):
                try nodes[index].node.upgradeFromLrtq(request, using: &protocolRandom)
            case .commit(_, let epoch):
                try nodes[index].node.commit(epoch)
            case .prepareAndCommit(_, let configuration):
                try nodes[index].node.prepareAndCommit(configuration)
            }
            return .done
        } catch let error as CommitError {
            return .refused(code: error.code.rawValue, reason: error.description)
        } catch {
            return .refused(code: "\(type(of: error))", reason: "\(error)")
        }
    }

    private func load(_ index: Int, _ epoch: Epoch) {
        lastLoad = nil
        guard nodes[index].up else { return }
        let result = try? nodes[index].node.loadRackSecret(epoch)
        process(index)
        guard let secret = result else { return }
        lastLoad = secret
        if var violation = InvariantChecker.checkLoadedSecret(
            secret,
            epoch: epoch,
            node: ids[index],
            firstLoaded: loadedSecrets[epoch]
        ) {
            violation.eventIndex = log.count - 1
            violations.append(violation)
        }
        if loadedSecrets[epoch] == nil { loadedSecrets[epoch] = secret }
        if epoch == nodes[index].persisted.latestCommittedEpoch { loadedBy[index] = epoch }
    }

    private func view(_ index: Int) -> NodeView {
        let node = nodes[index]
        return node.up
            ? NodeView(node.node, alarms: node.alarms)
            : NodeView(id: ids[index], state: node.persisted, alarms: node.alarms)
    }

    private func markDirty(_ index: Int) {
        if !dirty[index] {
            dirty[index] = true
            dirtyList.append(index)
        }
    }

    /// Checks the nodes the last event touched (and the control plane if it
    /// may have changed) against everything checked before.
    private func checkInvariants() {
        for index in dirtyList { views[index] = view(index) }
        let found = checker.check(
            nodes: views,
            changed: dirtyList,
            controlPlane: ControlPlaneView(controlPlane),
            controlPlaneChanged: controlPlaneChanged,
            index: indexOf
        )
        for index in dirtyList { dirty[index] = false }
        dirtyList.removeAll(keepingCapacity: true)
        controlPlaneChanged = false
        for var violation in found {
            violation.eventIndex = log.count - 1
            violations.append(violation)
        }
    }

    // MARK: - Healing and liveness

    /// Heals every fault, lets the cluster settle, and checks liveness.
    public func finish() -> SimulationReport {
        guard violations.isEmpty else { return report(liveness: false, detail: "stopped at a violation") }
        if partitionMask != nil { apply(.heal) }
        for index in 0..<nodes.count where !nodes[index].up { apply(.restart(node: index)) }
        apply(.reconnectAll)
        var detail = "did not settle"
        for round in 0..<200 where violations.isEmpty {
            // A run that is still in LRTQ is upgraded while it heals.
            if controlPlane.inLrtq && !controlPlane.isReconfiguring { apply(.upgradeFromLrtq) }
            deliverAll()
            apply(.tick)
            deliverAll()
            if let config = controlPlane.lastCommitted {
                for member in config.sortedMembers {
                    let index = indexOf[member]!
                    if loadedBy[index] != config.epoch,
                        nodes[index].persisted.latestCommittedEpoch == config.epoch
                    {
                        apply(.loadSecret(node: index, epoch: config.epoch.value))
                    }
                }
                deliverAll()
            }
            if let problem = unsettled() {
                detail = problem
                if round % 20 == 19 { apply(.reconnectAll) }
                continue
            }
            if let problem = checkOlderEpochs() {
                return report(liveness: false, detail: problem)
            }
            if let problem = checkLrtqSecretReadable() {
                lrtqSecretReadable = false
                return report(liveness: false, detail: problem)
            }
            return report(liveness: violations.isEmpty, detail: nil)
        }
        return report(liveness: false, detail: detail)
    }

    private func deliverAll() {
        var budget = 1_000_000
        while let link = activeLinks.first, violations.isEmpty, budget > 0 {
            budget -= 1
            apply(.deliver(from: link / nodes.count, to: link % nodes.count))
        }
    }

    /// `nil` once the last configuration is committed and loaded everywhere.
    func unsettled() -> String? {
        guard let config = controlPlane.lastCommitted else { return "nothing was ever committed" }
        if controlPlane.isReconfiguring { return "a reconfiguration is still under way" }
        for member in config.sortedMembers where nodes[indexOf[member]!].persisted.latestCommittedEpoch != config.epoch
        {
            return "\(member) has not committed epoch \(config.epoch)"
        }
        for member in config.sortedMembers where loadedBy[indexOf[member]!] != config.epoch {
            return "\(member) has not loaded the secret of \(config.epoch)"
        }
        return nil
    }

    /// Every member reads a sample of older committed epochs, matching what was loaded before.
    func checkOlderEpochs() -> String? {
        guard let config = controlPlane.lastCommitted else { return "nothing committed" }
        let epochs = controlPlane.committedEpochs
        var sample = epochs.count <= 8 ? epochs : [epochs[0], epochs[epochs.count / 2], epochs[epochs.count - 2]]
        sample.append(config.epoch)
        for member in config.sortedMembers {
            let index = indexOf[member]!
            for epoch in sample {
                // Polled: the first call may start gathering shares.
                for _ in 0..<3 {
                    apply(.loadSecret(node: index, epoch: epoch.value))
                    if lastLoad != nil { break }
                    deliverAll()
                }
                guard lastLoad != nil else { return "\(member) cannot read the secret of epoch \(epoch)" }
            }
        }
        return violations.isEmpty ? nil : "violation while reading older epochs"
    }
}

extension Simulator {
    /// For a run started in LRTQ: every member of the last configuration
    /// reads epoch 1 from the chain, and it is the LRTQ secret the dealer drew.
    func checkLrtqSecretReadable() -> String? {
        guard let expected = lrtqSecret else { return nil }
        guard let config = controlPlane.lastCommitted, !controlPlane.inLrtq else {
            return "the rack was never upgraded from LRTQ"
        }
        for member in config.sortedMembers {
            let index = indexOf[member]!
            for _ in 0..<3 {
                apply(.loadSecret(node: index, epoch: Epoch.lrtq.value))
                if lastLoad != nil { break }
                deliverAll()
            }
            guard let secret = lastLoad else { return "\(member) cannot read the LRTQ secret as epoch 1" }
            guard secret == expected else { return "\(member) reads a different secret than LRTQ's as epoch 1" }
        }
        lrtqSecretReadable = true
        return violations.isEmpty ? nil : "violation while reading the LRTQ secret"
    }
}

/// A fast deterministic generator for choosing events (not for secrets).
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
