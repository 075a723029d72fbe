import KeyrackCore
import SecretSharing
import TrustQuorum

/// Measurements of the protocol that are not throughput: message counts per
/// reconfiguration and the cost of catching up after missed epochs.
public enum Measurements {
    /// Messages per reconfiguration.
    public struct MessageCount: Sendable, Equatable, Codable {
        /// N.
        public var nodes: Int
        /// Reconfigurations measured.
        public var reconfigurations: Int
        /// Messages sent in total, divided by the reconfigurations.
        public var messagesPerReconfiguration: Double
    }

    /// Runs the initial setup and `rotations` rotations of an `nodes`-node
    /// rack without faults, each to completion (every member committed), and
    /// counts the messages of the rotations.
    public static func messagesPerReconfiguration(nodes: Int, rotations: Int = 5) -> MessageCount {
        let simulator = Simulator(
            options: SimulationOptions(nodes: nodes, seed: 1, events: 0, faults: [], spareNodes: 0))
        simulator.settle(after: .rotate)
        let before = simulator.messagesSent
        for _ in 0..<rotations { simulator.settle(after: .rotate) }
        let sent = simulator.messagesSent - before
        return MessageCount(
            nodes: nodes,
            reconfigurations: rotations,
            messagesPerReconfiguration: Double(sent) / Double(max(rotations, 1))
        )
    }

    /// A node that was down for `missedEpochs` reconfigurations, brought to
    /// the point where it holds K − 1 shares of the latest epoch from its
    /// peers and must rebuild the latest secret and read the oldest one.
    public struct CatchUp: Sendable {
        /// The node, with its own share of the latest epoch.
        public var node: Node
        /// K − 1 peers' shares of the latest epoch, as messages from them.
        public var shares: [(PlatformId, Message)]
        /// The latest epoch.
        public var latestEpoch: Epoch
        /// The first epoch, whose secret comes from the chain.
        public var firstEpoch: Epoch
        /// The secret of the first epoch, as another node loaded it.
        public var expectedFirstSecret: RackSecret

        /// Feeds the shares and reads the first epoch's secret: one
        /// reconstruction and one chain decryption. Returns the secret.
        public func run() -> RackSecret? {
            var node = node
            _ = try? node.loadRackSecret(latestEpoch)
            _ = node.drainOutput()
            for (from, message) in shares { node.received(from: from, message: message) }
            return try? node.loadRackSecret(firstEpoch)
        }
    }

    /// Builds a 4-node rack, keeps one node down for `missedEpochs`
    /// rotations, restarts it and lets it commit and compute its share; the
    /// result is ready to time with ``CatchUp/run()``.
    public static func prepareCatchUp(missedEpochs: Int) -> CatchUp? {
        let simulator = Simulator(options: SimulationOptions(nodes: 4, seed: 7, events: 0, faults: [], spareNodes: 0))
        simulator.settle(after: .rotate)
        simulator.settle(after: .loadSecret(node: 0, epoch: 1))
        guard let expected = try? simulator.nodes[0].node.loadRackSecret(1) else { return nil }
        simulator.apply(.crash(node: 3))
        for _ in 0..<missedEpochs { simulator.settle(after: .rotate) }
        simulator.settle(after: .restart(node: 3))
        simulator.settle(after: .tick)
        guard let latest = simulator.controlPlane.lastCommitted,
            simulator.nodes[3].persisted.hasPrepared(latest.epoch)
        else { return nil }
        var shares: [(PlatformId, Message)] = []
        for peer in latest.sortedMembers where peer != simulator.ids[3] && shares.count < latest.threshold - 1 {
            let index = simulator.ids.firstIndex(of: peer)!
            let share = simulator.nodes[index].persisted.shares[latest.epoch]!
            shares.append((peer, Message(rackId: simulator.rackId, kind: .share(latest.epoch, share))))
        }
        var node = simulator.nodes[3].node
        _ = node.drainOutput()
        return CatchUp(
            node: node,
            shares: shares,
            latestEpoch: latest.epoch,
            firstEpoch: 1,
            expectedFirstSecret: expected
        )
    }
}

extension Simulator {
    /// Applies `event`, then delivers every message and ticks the control
    /// plane until nothing is in flight and no commit is pending.
    func settle(after event: SimulationEvent) {
        apply(event)
        for _ in 0..<100 {
            while let link = firstActiveLink { apply(.deliver(from: link / nodes.count, to: link % nodes.count)) }
            let pendingUp = controlPlane.pendingCommits.contains { nodes[indexOf[$0]!].up }
            if !controlPlane.isReconfiguring && !pendingUp && firstActiveLink == nil {
                let computing = nodes.contains { $0.up && $0.node.computingShareEpoch != nil }
                if !computing { return }
            }
            apply(.tick)
        }
    }
}
