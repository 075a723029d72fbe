import KeyrackCore
import SecretSharing
import Testing

@testable import TrustQuorum

/// A tiny in-memory rack for unit tests: nodes, a FIFO of messages in
/// flight, who is connected, and what each node persisted.
struct Harness {
    let rackId: RackId
    var ids: [PlatformId]
    var nodes: [PlatformId: Node] = [:]
    var inFlight: [(from: PlatformId, to: PlatformId, message: Message)] = []
    var alarms: [PlatformId: [Alarm]] = [:]
    var warnings: [PlatformId: [NodeWarning]] = [:]
    var random = SeededRandomSource(seed: 42)
    var sent: [(from: PlatformId, to: PlatformId, message: Message)] = []

    init(count: Int) {
        var setup = SeededRandomSource(seed: 1)
        rackId = RackId.random(using: &setup)
        ids = (0..<count).map { PlatformId(part: "913-0000019", serial: "SN\(100 + $0)") }
        for id in ids { nodes[id] = Node(platformId: id, rackId: rackId) }
    }

    static func id(_ index: Int) -> PlatformId { PlatformId(part: "913-0000019", serial: "SN\(100 + index)") }

    /// Connects every pair of nodes in `among` (default: all).
    mutating func connectAll(_ among: [PlatformId]? = nil) {
        let group = among ?? ids
        for a in group {
            for b in group where a != b { connect(a, b) }
        }
    }

    /// `a` learns that `b` connected.
    mutating func connect(_ a: PlatformId, _ b: PlatformId) {
        nodes[a]!.connected(b)
        drain(a)
    }

    mutating func drain(_ id: PlatformId) {
        let output = nodes[id]!.drainOutput()
        alarms[id, default: []] += output.alarms
        warnings[id, default: []] += output.warnings
        for outgoing in output.messages {
            inFlight.append((id, outgoing.to, outgoing.message))
            sent.append((id, outgoing.to, outgoing.message))
        }
    }

    /// Delivers messages in order until none is left (or `limit` deliveries).
    mutating func deliverAll(dropping dropped: Set<PlatformId> = [], limit: Int = 10_000) {
        var count = 0
        while !inFlight.isEmpty && count < limit {
            let (from, to, message) = inFlight.removeFirst()
            count += 1
            guard !dropped.contains(to), !dropped.contains(from), nodes[to] != nil else { continue }
            nodes[to]!.received(from: from, message: message)
            drain(to)
        }
    }

    mutating func reconfigure(
        _ coordinator: PlatformId,
        epoch: Epoch,
        last: Epoch?,
        members: [PlatformId],
        threshold: Int? = nil
    ) throws(ReconfigureError) {
        let request = ReconfigureRequest(
            rackId: rackId,
            epoch: epoch,
            lastCommittedEpoch: last,
            members: Set(members),
            threshold: threshold ?? members.count / 2 + 1
        )
        defer { drain(coordinator) }
        try nodes[coordinator]!.reconfigure(request, using: &random)
    }

    /// Commits `epoch` at every node in `members`, with `commit` for those
    /// that prepared and `prepareAndCommit` for the rest.
    mutating func commitEverywhere(_ epoch: Epoch, members: [PlatformId]) throws {
        let config = nodes.values.compactMap { $0.persistentState.configurations[epoch] }.first!
        for member in members {
            if nodes[member]!.persistentState.hasPrepared(epoch) {
                try nodes[member]!.commit(epoch)
            } else {
                try nodes[member]!.prepareAndCommit(config)
            }
            drain(member)
        }
    }

    /// Initial setup of every node by `ids[0]`, fully committed.
    mutating func setUp(threshold: Int? = nil) throws {
        connectAll()
        try reconfigure(ids[0], epoch: 1, last: nil, members: ids, threshold: threshold)
        deliverAll()
        try commitEverywhere(1, members: ids)
        deliverAll()
    }

    /// Polls `loadRackSecret` and delivers until it answers.
    mutating func load(_ id: PlatformId, _ epoch: Epoch) throws -> RackSecret? {
        for _ in 0..<5 {
            let result = try nodes[id]!.loadRackSecret(epoch)
            drain(id)
            if let result { return result }
            deliverAll()
        }
        return nil
    }

    var allAlarms: [Alarm] { alarms.values.flatMap { $0 } }
}
