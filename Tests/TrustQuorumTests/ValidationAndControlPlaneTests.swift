import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

@testable import TrustQuorum

@Suite("ValidatedReconfigureRequest")
struct ValidationTests {
    static let rack = RackId(bytes: Array(0..<16))!
    static let ids = (0..<40).map { PlatformId(part: "913", serial: "S\(100 + $0)") }
    static let me = ids[0]

    static func request(
        epoch: Epoch = 2,
        last: Epoch? = 1,
        members: Int = 5,
        threshold: Int = 3,
        rack: RackId = rack,
        including: PlatformId = me
    ) -> ReconfigureRequest {
        var set = Set(ids.dropFirst().prefix(members - 1))
        set.insert(including)
        return ReconfigureRequest(
            rackId: rack,
            epoch: epoch,
            lastCommittedEpoch: last,
            members: set,
            threshold: threshold
        )
    }

    /// A node that committed epoch 1 with its share.
    static var committedState: PersistentState {
        var state = PersistentState.empty
        var members: [PlatformId: ShareDigest] = [:]
        for id in ids.prefix(5) { members[id] = ShareDigest(bytes: [UInt8](repeating: 1, count: 32))! }
        let config = try! Configuration(
            rackId: rack,
            epoch: 1,
            coordinator: me,
            members: members,
            threshold: 3,
            encryptedRackSecrets: nil
        )
        state.configurations[1] = config
        state.shares[1] = try! Share(x: 1, y: SecretBytes([UInt8](repeating: 2, count: 32)))
        state.committedEpochs = [1]
        return state
    }

    static func code(
        _ request: ReconfigureRequest,
        state: PersistentState = committedState,
        seen: Epoch? = 1,
        maximum: Int = 32
    ) -> ReconfigureError.Code? {
        do {
            _ = try ValidatedReconfigureRequest(
                request,
                coordinator: me,
                rackId: rack,
                state: state,
                highestEpochSeen: seen,
                maximumMembers: maximum
            )
            return nil
        } catch {
            return error.code
        }
    }

    @Test("a good request validates")
    func accepted() throws {
        #expect(Self.code(Self.request()) == nil)
        #expect(Self.code(Self.request(epoch: 1, last: nil), state: .empty, seen: nil) == nil)
        let validated = try ValidatedReconfigureRequest(
            Self.request(),
            coordinator: Self.me,
            rackId: Self.rack,
            state: Self.committedState,
            highestEpochSeen: 1
        )
        #expect(validated.lastCommitted?.epoch == 1)
        #expect(validated.members.count == 5)
    }

    @Test("rack id must match")
    func rackId() {
        #expect(Self.code(Self.request(rack: RackId(bytes: [UInt8](repeating: 9, count: 16))!)) == .rackIdMismatch)
    }

    @Test("the epoch must be newer than every epoch seen and than the last committed")
    func epochOrdering() {
        #expect(Self.code(Self.request(epoch: 1)) == .epochNotNewer)
        #expect(Self.code(Self.request(epoch: 5), seen: 5) == .epochNotNewer)
        #expect(Self.code(Self.request(epoch: 1, last: 1), seen: nil) == .epochNotNewer)
    }

    @Test("the last committed epoch must be this node's")
    func lastCommitted() {
        #expect(Self.code(Self.request(epoch: 3, last: nil)) == .lastCommittedEpochMismatch)
        var later = Self.committedState
        later.committedEpochs.insert(2)
        later.configurations[2] = later.configurations[1]
        #expect(Self.code(Self.request(epoch: 3, last: 1), state: later, seen: 2) == .lastCommittedEpochMismatch)
    }

    @Test("3 ≤ N ≤ 32 by default, configurable up to 255")
    func memberCount() {
        #expect(Self.code(Self.request(members: 2, threshold: 2)) == .memberCountOutOfRange)
        #expect(Self.code(Self.request(members: 33, threshold: 17)) == .memberCountOutOfRange)
        #expect(Self.code(Self.request(members: 33, threshold: 17), maximum: 40) == nil)
        #expect(Self.code(Self.request(members: 32, threshold: 17)) == nil)
        #expect(Self.code(Self.request(members: 3, threshold: 2)) == nil)
    }

    @Test("2 ≤ K < N")
    func threshold() {
        #expect(Self.code(Self.request(threshold: 1)) == .thresholdOutOfRange)
        #expect(Self.code(Self.request(threshold: 5)) == .thresholdOutOfRange)
        #expect(Self.code(Self.request(threshold: 4)) == nil)
        #expect(Self.code(Self.request(threshold: 2)) == nil)
    }

    @Test("the coordinator is a member")
    func coordinatorMember() {
        var request = Self.request()
        request.members.remove(Self.me)
        request.members.insert(Self.ids[30])
        #expect(Self.code(request) == .coordinatorNotMember)
    }

    @Test("the coordinator acked the last committed epoch (holds its share)")
    func coordinatorAcked() {
        var computing = Self.committedState
        computing.shares[1] = nil
        #expect(Self.code(Self.request(), state: computing) == .coordinatorHasNotAcked)
        #expect(Self.code(Self.request(epoch: 8, last: 7), seen: 1) == .coordinatorHasNotAcked)
    }

    @Test("an epoch more than 2^32 above the latest commit is out of reach")
    func epochReach() {
        #expect(Self.code(Self.request(epoch: Epoch(UInt64.max))) == .epochOutOfReach)
        #expect(Self.code(Self.request(epoch: Epoch(2 + (1 << 32)))) == .epochOutOfReach)
        #expect(Self.code(Self.request(epoch: Epoch(1 + (1 << 32)))) == nil)
        #expect(Self.upgradeCode(Self.upgrade(epoch: Epoch(2 + (1 << 32)))) == .epochOutOfReach)
        #expect(Self.upgradeCode(Self.upgrade(epoch: Epoch(1 + (1 << 32)))) == nil)
    }

    @Test("an expunged node refuses")
    func expunged() {
        var state = Self.committedState
        state.expunged = ExpungedMetadata(epoch: 2, from: Self.ids[1])
        #expect(Self.code(Self.request(epoch: 3), state: state) == .expunged)
    }

    @Test("platform ids must be non-empty and short")
    func platformIds() {
        var request = Self.request()
        request.members.remove(Self.ids[1])
        request.members.insert(PlatformId(part: "", serial: "x"))
        #expect(Self.code(request) == .invalidPlatformId)
    }

    /// A node of an LRTQ rack that has committed nothing.
    static var lrtqState: PersistentState {
        var state = PersistentState.empty
        let share = try! Share(x: 1, y: SecretBytes([UInt8](repeating: 2, count: 32)))
        state.lrtq = LrtqState(shareDigests: [share.digest], threshold: 3, share: share, spareShares: [])
        return state
    }

    static func upgradeCode(
        _ request: UpgradeFromLrtqRequest,
        state: PersistentState = lrtqState,
        seen: Epoch? = nil
    ) -> ReconfigureError.Code? {
        do {
            let validated = try ValidatedReconfigureRequest(
                upgrade: request,
                coordinator: me,
                rackId: rack,
                state: state,
                highestEpochSeen: seen
            )
            #expect(validated.lastCommitted == nil)
            return nil
        } catch {
            return error.code
        }
    }

    static func upgrade(epoch: Epoch = 2, members: Int = 5, threshold: Int = 3) -> UpgradeFromLrtqRequest {
        var set = Set(ids.dropFirst().prefix(members - 1))
        set.insert(me)
        return UpgradeFromLrtqRequest(rackId: rack, epoch: epoch, members: set, threshold: threshold)
    }

    @Test("an upgrade from LRTQ: valid at epoch ≥ 2 on a node in LRTQ; the common rules apply")
    func upgradeValidation() {
        #expect(Self.upgradeCode(Self.upgrade()) == nil)
        #expect(Self.upgradeCode(Self.upgrade(epoch: 1)) == .epochNotNewer)
        #expect(Self.upgradeCode(Self.upgrade(epoch: 3), seen: 3) == .epochNotNewer)
        #expect(Self.upgradeCode(Self.upgrade(members: 2, threshold: 1)) == .memberCountOutOfRange)
        #expect(Self.upgradeCode(Self.upgrade(threshold: 5)) == .thresholdOutOfRange)
        var foreign = Self.upgrade()
        foreign.rackId = RackId(bytes: Array(1...16))!
        #expect(Self.upgradeCode(foreign) == .rackIdMismatch)
        var without = Self.upgrade()
        without.members.remove(Self.me)
        without.members.insert(Self.ids[30])
        #expect(Self.upgradeCode(without) == .coordinatorNotMember)
        var expunged = Self.lrtqState
        expunged.expunged = ExpungedMetadata(epoch: 3, from: Self.ids[1])
        #expect(Self.upgradeCode(Self.upgrade(), state: expunged) == .expunged)
    }

    @Test("an upgrade on a node without LRTQ state is refused")
    func upgradeNotInLrtq() {
        #expect(Self.upgradeCode(Self.upgrade(), state: .empty) == .notInLrtq)
    }

    @Test("an upgrade on a node that committed a trust-quorum configuration is refused")
    func upgradeAlreadyUpgraded() {
        #expect(Self.upgradeCode(Self.upgrade(epoch: 4), state: Self.committedState) == .alreadyUpgraded)
    }

    @Test("a ticket for another coordinator, of the other kind, or not signed by the pinned operator is refused")
    func ticketChecks() throws {
        var node = Node(platformId: Self.me, rackId: Self.rack, persistentState: Self.committedState)
        var random = SeededRandomSource(seed: 5)
        func refusal(_ ticket: SignedTicket, upgrade: Bool = false) -> ReconfigureError.Code? {
            do {
                if upgrade {
                    try node.upgradeFromLrtq(ticket, using: &random)
                } else {
                    try node.reconfigure(ticket, using: &random)
                }
                return nil
            } catch {
                return error.code
            }
        }
        let request = Self.request()
        #expect(refusal(TestOperator.ticket(request, coordinator: Self.ids[1])) == .wrongTicket)
        #expect(refusal(TestOperator.ticket(request, coordinator: Self.me, by: TestOperator.forger)) == .unsigned)
        #expect(refusal(TestOperator.ticket(request, coordinator: Self.me), upgrade: true) == .wrongTicket)
        // A valid signature over another ticket does not carry over.
        let genuine = TestOperator.ticket(request, coordinator: Self.me)
        var altered = request
        altered.threshold = 2
        let swapped = SignedTicket(ReconfigureTicket(altered, coordinator: Self.me), signature: genuine.signature)
        #expect(refusal(swapped) == .unsigned)
        #expect(!node.isCoordinating)
        #expect(refusal(genuine) == nil)
        #expect(node.isCoordinating)
    }

    @Test("every error code is covered by a test above")
    func coverage() {
        #expect(ReconfigureError.Code.allCases.count == 14)
    }
}

@Suite("ControlPlane")
struct ControlPlaneTests {
    static let rack = RackId(bytes: Array(0..<16))!
    static let ids = (0..<10).map { PlatformId(part: "913", serial: "S\(100 + $0)") }

    static func config(_ epoch: Epoch, members: [PlatformId], threshold: Int) -> Configuration {
        var digests: [PlatformId: ShareDigest] = [:]
        for id in members { digests[id] = ShareDigest(bytes: [UInt8](repeating: 3, count: 32))! }
        return try! Configuration(
            rackId: rack,
            epoch: epoch,
            coordinator: members[0],
            members: digests,
            threshold: threshold,
            encryptedRackSecrets: nil
        )
    }

    @Test("Z is 0, 1, 2, 3, 4 for N ≤ 4, 5–8, 9–15, 16–23, above")
    func safetyMargin() {
        let expected: [(Int, Int)] = [
            (3, 0), (4, 0), (5, 1), (8, 1), (9, 2), (15, 2), (16, 3), (23, 3), (24, 4), (32, 4),
        ]
        for (n, z) in expected { #expect(ControlPlane.safetyMargin(memberCount: n) == z) }
        #expect(ControlPlane.commitQuorum(threshold: 3, memberCount: 5) == 4)
        #expect(ControlPlane.commitQuorum(threshold: 4, memberCount: 5) == 5)  // capped at N
    }

    /// Drives the initial setup of `members` to commit, all confirmed.
    static func committed(_ members: [PlatformId]) throws -> (ControlPlane, Configuration) {
        var cp = ControlPlane(rackId: rack, options: ControlPlaneOptions(stallTicks: 3))
        let started = try cp.startReconfiguration(members: Set(members), available: Set(members))
        let action = try #require(started)
        let (coordinator, request) = try #require(action.reconfiguration)
        let config = config(request.epoch, members: members, threshold: request.threshold)
        let actions = cp.coordinatorReported(
            CoordinatorStatus(epoch: request.epoch, configuration: config, acked: Set(members)),
            from: coordinator,
            available: Set(members)
        )
        for action in actions { cp.commitConfirmed(by: action.target, epoch: request.epoch) }
        return (cp, config)
    }

    @Test("commits after K + Z acks: commit to the prepared, prepareAndCommit to the others")
    func commitRule() throws {
        let members = Array(Self.ids.prefix(5))
        var cp = ControlPlane(rackId: Self.rack)
        let action = try #require(try cp.startReconfiguration(members: Set(members), available: Set(members)))
        let (coordinator, request) = try #require(action.reconfiguration)
        #expect(request.epoch == 1 && request.lastCommittedEpoch == nil && request.threshold == 3)
        let config = Self.config(1, members: members, threshold: 3)
        // K + Z = 4: three acks are not enough.
        let three = Set(members.prefix(3))
        #expect(
            cp.coordinatorReported(
                CoordinatorStatus(epoch: 1, configuration: config, acked: three),
                from: coordinator,
                available: Set(members)
            ).isEmpty
        )
        // A report from someone else, or for another epoch, is ignored.
        #expect(
            cp.coordinatorReported(
                CoordinatorStatus(epoch: 1, configuration: config, acked: Set(members)),
                from: members.first { $0 != coordinator }!,
                available: Set(members)
            ).isEmpty
        )
        let four = Set(members.prefix(4))
        let actions = cp.coordinatorReported(
            CoordinatorStatus(epoch: 1, configuration: config, acked: four),
            from: coordinator,
            available: Set(members.prefix(4))  // the fifth is down
        )
        #expect(actions == members.prefix(4).map { .commit($0, config) })
        #expect(cp.lastCommitted == config && cp.epochsCommitted == 1)
        for member in members.prefix(4) { cp.commitConfirmed(by: member, epoch: 1) }
        #expect(cp.pendingCommits == [members[4]])
        // When the fifth comes back it gets prepareAndCommit.
        #expect(cp.tick(available: Set(members)) == [.prepareAndCommit(members[4], config)])
        cp.commitConfirmed(by: members[4], epoch: 1)
        #expect(cp.pendingCommits.isEmpty)
        #expect(cp.tick(available: Set(members)).isEmpty)
    }

    @Test("a refused commit falls back to prepareAndCommit")
    func refusedCommit() throws {
        let members = Array(Self.ids.prefix(3))
        var cp = ControlPlane(rackId: Self.rack)
        let started = try cp.startReconfiguration(members: Set(members), available: Set(members))
        let (coordinator, _) = try #require(started?.reconfiguration)
        let config = Self.config(1, members: members, threshold: 2)
        _ = cp.coordinatorReported(
            CoordinatorStatus(epoch: 1, configuration: config, acked: Set(members)),
            from: coordinator,
            available: []
        )
        cp.commitRefused(by: members[1])
        #expect(cp.tick(available: [members[1]]) == [.prepareAndCommit(members[1], config)])
    }

    @Test("the coordinator is a member that committed the last epoch")
    func coordinatorChoice() throws {
        let members = Array(Self.ids.prefix(5))
        var (cp, _) = try Self.committed(members)
        // Only ids[3] is available among committed members; ids[7] is new.
        let action = try cp.startReconfiguration(
            members: Set(members + [Self.ids[7]]),
            available: [Self.ids[3], Self.ids[7]]
        )
        let (coordinator, request) = try #require(action?.reconfiguration)
        #expect(coordinator == Self.ids[3])
        #expect(request.lastCommittedEpoch == 1 && request.epoch == 2)
        #expect(throws: ControlPlaneError.self) {
            try cp.startReconfiguration(members: Set(members), available: Set(members))
        }
    }

    @Test("no eligible coordinator: wait, then start when one is available")
    func waiting() throws {
        let members = Array(Self.ids.prefix(4))
        var (cp, _) = try Self.committed(members)
        #expect(try cp.startReconfiguration(members: Set(members), available: [Self.ids[8]]) == nil)
        #expect(cp.isReconfiguring)
        #expect(cp.tick(available: []).isEmpty)
        let actions = cp.tick(available: [members[2]])
        #expect(actions.count == 1)
        #expect(actions.first?.target == members[2])
    }

    @Test("a dead coordinator aborts the attempt and the next epoch is tried with another")
    func abortOnDeadCoordinator() throws {
        let members = Array(Self.ids.prefix(5))
        var (cp, _) = try Self.committed(members)
        let started = try cp.startReconfiguration(members: Set(members), available: Set(members))
        let (first, request) = try #require(started?.reconfiguration)
        let actions = cp.tick(available: Set(members).subtracting([first]))
        let (second, retry) = try #require(actions.first?.reconfiguration)
        #expect(second != first)
        #expect(retry.epoch == request.epoch.next)
        #expect(retry.lastCommittedEpoch == 1)
    }

    @Test(
        "resuming from what nodes report: the next epoch is above every epoch seen, coordinators come from those that committed, the others get prepareAndCommit"
    )
    func resuming() throws {
        let members = Array(Self.ids.prefix(5))
        let config = Self.config(4, members: members, threshold: 3)
        let committedBy = Set(members.prefix(3))
        var cp = ControlPlane(
            rackId: Self.rack,
            resumingFrom: config,
            committedMembers: committedBy.union([Self.ids[9]]),  // a non-member is ignored
            highestEpoch: 7
        )
        #expect(cp.lastCommitted == config)
        #expect(cp.pendingCommits == Set(members.suffix(2)))
        #expect(!cp.isReconfiguring)
        // Members that have not confirmed are delivered the configuration itself (they may not have prepared it).
        let deliveries = cp.tick(available: Set(members))
        #expect(deliveries == members.suffix(2).sorted().map { .prepareAndCommit($0, config) })
        let action = try #require(try cp.startReconfiguration(members: Set(members), available: Set(members)))
        let (coordinator, request) = try #require(action.reconfiguration)
        #expect(request.epoch == 8)
        #expect(request.lastCommittedEpoch == 4)
        #expect(committedBy.contains(coordinator))
        // Nothing committed yet, nothing seen: the first epoch is 1.
        var fresh = ControlPlane(rackId: Self.rack, resumingFrom: nil, committedMembers: [], highestEpoch: 0)
        let freshStart = try fresh.startReconfiguration(members: Set(members), available: Set(members))
        let (_, first) = try #require(freshStart?.reconfiguration)
        #expect(first.epoch == 1 && first.lastCommittedEpoch == nil)
    }

    @Test("a stalled reconfiguration is retried after stallTicks; progress resets the count")
    func stall() throws {
        let members = Array(Self.ids.prefix(5))
        var (cp, _) = try Self.committed(members)
        let started = try cp.startReconfiguration(members: Set(members), available: Set(members))
        let (coordinator, request) = try #require(started?.reconfiguration)
        let all = Set(members)
        for _ in 0..<3 { #expect(cp.tick(available: all).isEmpty) }
        _ = cp.coordinatorReported(
            CoordinatorStatus(epoch: request.epoch, configuration: nil, acked: [coordinator, members[4]]),
            from: coordinator,
            available: all
        )
        for _ in 0..<3 { #expect(cp.tick(available: all).isEmpty) }
        let retry = cp.tick(available: all)
        let (_, next) = try #require(retry.first?.reconfiguration)
        #expect(next.epoch == request.epoch.next)
    }

    @Test("a refused request is retried at the next epoch with another coordinator")
    func refusedRequest() throws {
        let members = Array(Self.ids.prefix(5))
        var (cp, _) = try Self.committed(members)
        let started = try cp.startReconfiguration(members: Set(members), available: Set(members))
        let (first, request) = try #require(started?.reconfiguration)
        #expect(cp.reconfigurationRefused(by: members.first { $0 != first }!, available: Set(members)) == nil)
        let retry = cp.reconfigurationRefused(by: first, available: Set(members))
        #expect(retry?.target != first)
        if case .reconfigure(_, let next) = retry { #expect(next.epoch == request.epoch.next) }
    }

    @Test("invalid membership is refused")
    func invalidMembership() {
        var cp = ControlPlane(rackId: Self.rack)
        #expect(throws: ControlPlaneError.self) {
            try cp.startReconfiguration(members: Set(Self.ids.prefix(2)), available: Set(Self.ids))
        }
        #expect(throws: ControlPlaneError.self) {
            try cp.startReconfiguration(members: Set(Self.ids.prefix(4)), threshold: 4, available: Set(Self.ids))
        }
    }
}

extension ControlPlaneAction {
    /// The coordinator and request of a `reconfigure`, `nil` for any other action.
    var reconfiguration: (PlatformId, ReconfigureRequest)? {
        if case .reconfigure(let coordinator, let request) = self { return (coordinator, request) }
        return nil
    }
}
