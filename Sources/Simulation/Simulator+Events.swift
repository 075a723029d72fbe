import KeyrackCore
import SecretSharing
import TrustQuorum

// The event generator: what can happen next, given the state.

extension Simulator {
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
        if faults.contains(.byzantine) { table.append((15, .forge)) }
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

    enum Kind {
        case deliver, drop, duplicate, reorder, tick, load, rotate, add, remove, partitionOrHeal, crash, crashLong,
            restart, upgrade, forge
    }

    func randomElement<T>(_ array: [T]) -> T? {
        array.isEmpty ? nil : array[Int(eventRandom.next() % UInt64(array.count))]
    }

    func event(for kind: Kind) -> SimulationEvent? {
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
        case .forge:
            return forgeEvent()
        case .restart:
            let epoch = controlPlane.highestEpoch
            let candidates = (0..<count).filter { index in
                !nodes[index].up && (nodes[index].downUntilEpoch.map { $0 <= epoch } ?? true)
            }
            return randomElement(candidates).map { .restart(node: $0) }
        }
    }
}
