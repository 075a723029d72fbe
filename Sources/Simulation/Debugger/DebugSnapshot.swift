import KeyrackCore
import SecretSharing
import TrustQuorum

/// What the debugger can see of the simulated rack at one point of a run:
/// per node and for the control plane, a list of named facts. ``diff(from:)``
/// compares two of them fact by fact. Shares appear as digests only.
struct DebugSnapshot: Equatable {
    /// One node or the control plane and its facts, in a fixed order.
    struct Entity: Equatable {
        var name: String
        var facts: [(key: String, value: String)]

        static func == (lhs: Entity, rhs: Entity) -> Bool {
            lhs.name == rhs.name && lhs.facts.elementsEqual(rhs.facts) { $0.key == $1.key && $0.value == $1.value }
        }
    }

    var entities: [Entity]

    /// The snapshot of `simulator` now.
    init(_ simulator: Simulator) {
        entities = simulator.nodes.indices.map { Self.node($0, in: simulator) }
        entities.append(Self.controlPlane(simulator))
    }

    /// The facts about node `index`.
    static func node(_ index: Int, in simulator: Simulator) -> Entity {
        let sim = simulator.nodes[index]
        let state = sim.up ? sim.node.persistentState : sim.persisted
        var facts: [(String, String)] = []
        facts.append(("status", sim.up ? "up" : "down" + (sim.downUntilEpoch.map { " until epoch \($0)" } ?? "")))
        facts.append(("phase", sim.up ? phase(of: sim.node, simulator: simulator) : "none (down)"))
        facts.append(("committed", list(state.committedEpochs.sorted().map(\.description))))
        facts.append(("latest committed", state.latestCommittedEpoch?.description ?? "none"))
        facts.append(("expunged", state.expunged.map { "at epoch \($0.epoch) by \(simulator.name($0.from))" } ?? "no"))
        for epoch in state.configurations.keys.sorted() {
            facts.append(("configuration \(epoch)", describe(state.configurations[epoch]!, simulator: simulator)))
        }
        for epoch in state.shares.keys.sorted() {
            let share = state.shares[epoch]!
            facts.append(("share \(epoch)", "x=\(share.x) sha256 \(ShareDigest(of: share).hex.prefix(16))…"))
        }
        facts.append(("alarms", list(sim.alarms.map(\.description))))
        return Entity(name: "node \(index)", facts: facts)
    }

    /// The coordinator phase (or share computation) of a live node.
    static func phase(of node: Node, simulator: Simulator) -> String {
        if let status = node.coordinatorStatus {
            guard status.configuration != nil else {
                return "coordinating epoch \(status.epoch): collecting shares of the last committed epoch"
            }
            let acked = status.acked.map { simulator.name($0) }.sorted()
            return "coordinating epoch \(status.epoch): preparing, acked by \(list(acked))"
        }
        if let epoch = node.computingShareEpoch { return "computing its share of epoch \(epoch)" }
        return "idle"
    }

    static func describe(_ config: Configuration, simulator: Simulator) -> String {
        let members = config.sortedMembers.map { simulator.name($0) }.joined(separator: " ")
        return "coordinator \(simulator.name(config.coordinator)), K \(config.threshold), members [\(members)], "
            + "fingerprint \(config.fingerprint.hexString.prefix(8))"
    }

    static func controlPlane(_ simulator: Simulator) -> Entity {
        let plane = simulator.controlPlane
        var facts: [(String, String)] = []
        if let last = plane.lastCommitted {
            facts.append(("last committed", "epoch \(last.epoch): " + describe(last, simulator: simulator)))
        } else {
            facts.append(("last committed", "none"))
        }
        facts.append(("epochs committed", "\(plane.epochsCommitted)"))
        facts.append(("confirmed commits", list(plane.committedMembers.map { simulator.name($0) }.sorted())))
        if let (epoch, coordinator) = plane.currentAttempt {
            facts.append(("reconfiguring", "epoch \(epoch), coordinator \(simulator.name(coordinator))"))
        } else {
            facts.append(("reconfiguring", plane.isReconfiguring ? "waiting for a coordinator" : "no"))
        }
        facts.append(("messages sent", "\(simulator.messagesSent)"))
        facts.append(("alarms", "\(simulator.alarmCount)"))
        return Entity(name: "control plane", facts: facts)
    }

    static func list(_ items: [String]) -> String { items.isEmpty ? "none" : items.joined(separator: ", ") }

    /// The facts that differ from `old`, one line each (`entity key: old → new`).
    func diff(from old: DebugSnapshot) -> [String] {
        var lines: [String] = []
        for (before, after) in zip(old.entities, entities) where before != after {
            let oldFacts = Dictionary(before.facts, uniquingKeysWith: { first, _ in first })
            let newFacts = Dictionary(after.facts, uniquingKeysWith: { first, _ in first })
            var keys: [String] = before.facts.map(\.key)
            for (key, _) in after.facts where oldFacts[key] == nil { keys.append(key) }
            for key in keys where oldFacts[key] != newFacts[key] {
                lines.append("\(after.name) \(key): \(oldFacts[key] ?? "(none)") → \(newFacts[key] ?? "(none)")")
            }
        }
        return lines
    }
}

extension Simulator {
    /// The index of a node's platform id, as `nK` (the event log names nodes by index).
    func name(_ id: PlatformId) -> String {
        indexOf[id].map { "n\($0)" } ?? id.description
    }
}
