import KeyrackCore
import SecretSharing
import TrustQuorum

// The Byzantine fault (`--faults …,byzantine`): one node — a member at the
// start, later perhaps a removed node that kept its key — sends forged
// messages on top of running the protocol honestly. Each forgery is made from
// the seed in its event, so a log replays exactly.

extension Simulator {
    /// The Byzantine node: the last of the initial members.
    var byzantineNode: Int { options.nodes - 1 }

    /// How many genuine signed messages are kept for replays.
    static let replayCapacity = 32

    /// Keeps a genuine signed message (a `Prepare`, `CommitAdvance` or `Expunged`) for later replays.
    func capture(_ message: Message) {
        switch message.kind {
        case .prepare, .commitAdvance, .expunged:
            if captured.count == Self.replayCapacity { captured.removeFirst() }
            captured.append(message)
        default:
            break
        }
    }

    /// The next forgery event, for a node that is up.
    func forgeEvent() -> SimulationEvent? {
        let targets = (0..<nodes.count).filter { $0 != byzantineNode && nodes[$0].up }
        guard let target = randomElement(targets) else { return nil }
        return .forge(target: target, seed: eventRandom.next())
    }

    /// Delivers the forgery of `seed` from the Byzantine node to `target`.
    func forge(target: Int, seed: UInt64) {
        guard target != byzantineNode, nodes.indices.contains(target), nodes[target].up else { return }
        let message = forgery(seed: seed, target: target)
        forgeries += 1
        nodes[target].node.received(from: ids[byzantineNode], message: message)
        process(target)
    }

    /// What the Byzantine node sends `target` for `seed`: a forged
    /// `Expunged`, `CommitAdvance` or `Prepare` (its own ticket, or a genuine
    /// one of another coordinator) at an epoch just above the target's, far
    /// above it or at 2^64−1, signed by a key no node pins; a share that fails
    /// its digest; or the replay of a genuine signed message.
    func forgery(seed: UInt64, target: Int) -> Message {
        var random = SeededRandomSource(seed: seed)
        func draw() -> UInt64 { random.bytes(8).reduce(0) { $0 << 8 | UInt64($1) } }
        let byzantine = ids[byzantineNode]
        let state = nodes[target].node.persistentState
        let latest = state.latestCommittedEpoch ?? Epoch(0)
        let epoch: Epoch
        switch draw() % 4 {
        case 0: epoch = latest.next ?? latest
        case 1: epoch = Epoch(latest.value &+ 2)
        case 2: epoch = Epoch(UInt64.max)
        default: epoch = Epoch(latest.value &+ 1 &+ draw() % (1 << 33))
        }
        var members = Set(targetMembers.map { ids[$0] })
        members.insert(byzantine)
        members.insert(ids[target])
        let kind = seed % 6
        switch kind {
        case 0:
            members.remove(ids[target])
            let config = Self.madeUp(
                rackId: rackId, epoch: epoch, coordinator: byzantine, members: members, random: &random
            ).0
            return Message(rackId: rackId, kind: .expunged(signedByForger(config)))
        case 1:
            let config = Self.madeUp(
                rackId: rackId, epoch: epoch, coordinator: byzantine, members: members, random: &random
            ).0
            return Message(rackId: rackId, kind: .commitAdvance(signedByForger(config)))
        case 2, 3:
            var ticket = ReconfigureTicket(
                ReconfigureRequest(
                    rackId: rackId, epoch: epoch, lastCommittedEpoch: state.latestCommittedEpoch, members: members,
                    threshold: ReconfigureRequest.defaultThreshold(memberCount: members.count)),
                coordinator: byzantine)
            var signature = try! forgerKey.sign(.ticket(ticket))
            let genuine = captured.compactMap { message -> SignedTicket? in
                guard case .prepare(_, _, let ticket) = message.kind, ticket.ticket.coordinator != byzantine,
                    ticket.ticket.members.contains(ids[target])
                else { return nil }
                return ticket
            }
            if kind == 3, !genuine.isEmpty {
                let replayed = genuine[Int(draw() % UInt64(genuine.count))]
                ticket = replayed.ticket
                signature = replayed.signature
            }
            let (config, shares) = Self.madeUp(
                rackId: rackId, epoch: ticket.epoch, coordinator: ticket.coordinator, members: ticket.members,
                threshold: ticket.threshold, random: &random)
            let share = shares[ids[target]]!
            return Message(rackId: rackId, kind: .prepare(config, share, SignedTicket(ticket, signature: signature)))
        case 4:
            let share = try! Share(x: UInt8(1 + draw() % 200), y: SecretBytes(random.bytes(32)))
            return Message(rackId: rackId, kind: .share(latest, share))
        default:
            guard !captured.isEmpty else { return Message(rackId: rackId, kind: .getShare(latest)) }
            return captured[Int(draw() % UInt64(captured.count))]
        }
    }

    func signedByForger(_ configuration: Configuration) -> SignedConfiguration {
        SignedConfiguration(configuration, signature: try! forgerKey.sign(.commit(configuration)))
    }

    /// A configuration nobody decided, with real shares for its digests
    /// (so that only the signature stands in the way).
    static func madeUp(
        rackId: RackId, epoch: Epoch, coordinator: PlatformId, members: Set<PlatformId>, threshold: Int? = nil,
        random: inout SeededRandomSource
    ) -> (Configuration, [PlatformId: Share]) {
        let sorted = members.sorted()
        let k = min(max(2, threshold ?? ReconfigureRequest.defaultThreshold(memberCount: sorted.count)), sorted.count)
        let split = try! Shamir.split(
            RackSecret.random(using: &random).bytes, threshold: k, shares: sorted.count, using: &random)
        let shares = Dictionary(uniqueKeysWithValues: zip(sorted, split))
        let config = try! Configuration(
            rackId: rackId, epoch: epoch, coordinator: coordinator, members: shares.mapValues(\.digest), threshold: k,
            encryptedRackSecrets: nil)
        return (config, shares)
    }
}

/// Accepts every signature: the weakened node of the tests that show what
/// the operator's signatures prevent. Never used by a real run.
struct AnySignature: DecisionVerifier {
    func verifies(_ signature: OperatorSignature, over statement: [UInt8]) -> Bool { true }
}
