import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing
import TrustQuorum

@testable import NodeAgent

@Suite("AgentCore: the node's rules, with values")
struct AgentCoreTests {
    /// A committed rack of `count` cores, all connected and unlocked.
    static func setUp(_ count: Int = 3, disks: [String] = ["data0"]) throws -> CoreRack {
        var rack = CoreRack(count: count, disks: disks)
        rack.connectAll()
        let outputs = rack.operate(members: Set(rack.platforms), threshold: 2)
        try #require(outputs.finished?.epoch == Epoch(1), "set-up did not commit: \(outputs)")
        return rack
    }

    @Test("set up by the operator, every node commits epoch 1 and unlocks; disks are recorded under it")
    func setUpAndUnlock() throws {
        let rack = try Self.setUp()
        for core in rack.cores {
            let status = core.status()
            #expect(status.committedEpoch == Epoch(1))
            #expect(status.unlockedEpoch == Epoch(1))
            #expect(status.connected.count == 2)
            #expect(core.agentState.disks == ["data0": Epoch(1)])
            #expect(status.rekey.isEmpty)
        }
    }

    @Test("persist before send: a Prepare goes out only after its ledger write is reported")
    func persistBeforeSend() throws {
        var rack = CoreRack(count: 3)
        rack.connectAll()
        let request = rack.initialRequest
        var core = rack.cores[0]
        let first = core.handle(.admin(.reconfigure(rack.ticket(request, for: 0)), request: 7))
        let write = try #require(first.firstIndex { if case .writeLedger = $0 { true } else { false } })
        #expect(!first[write...].contains { if case .send = $0 { true } else { false } })
        #expect(!first.contains { if case .reply = $0 { true } else { false } })
        let generation = core.generation + 1
        let released = core.handle(.ledgerWritten(generation: generation))
        let sends = released.compactMap { action -> PlatformId? in
            if case .send(let message, let peer, _) = action, case .prepare = message.kind { return peer }
            return nil
        }
        #expect(Set(sends) == Set(rack.platforms.dropFirst()))
        #expect(released.last == .reply(7, AdminResponse()))
        #expect(core.generation == generation)
        #expect(core.durable == core.node.persistentState)
    }

    @Test("a failed ledger write halts: nothing that depended on it is sent, channels close, only status answers")
    func haltOnWriteFailure() throws {
        var rack = CoreRack(count: 3)
        rack.connectAll()
        let request = rack.initialRequest
        rack.failLedgerWrite = [0]
        let answer = rack.admin(.reconfigure(rack.ticket(request, for: 0)), to: 0)
        #expect(answer?.error?.code == .halted)
        let actions = rack.log[0]
        #expect(!actions.contains { if case .send = $0 { true } else { false } })
        let closed = Set(actions.compactMap { if case .close(let id) = $0 { id } else { nil } })
        #expect(closed == [rack.channel[0][1], rack.channel[0][2]])
        #expect(actions.contains(.stopDialing))
        #expect(rack.cores[0].halted != nil)
        #expect(rack.cores[0].durable == .empty)  // reports the state last written, not what is in memory
        #expect(rack.cores[0].agentState.alarms.last?.hasPrefix("NodeHalted") == true)
        let signature = TestOperator.signed(try #require(rack.cores[0].node.persistentState.configurations[1]))
            .signature
        #expect(rack.admin(.commit(Epoch(1), signature), to: 0)?.error?.code == .halted)
        #expect(rack.admin(.diskKey(disk: "data0", epoch: nil), to: 0)?.error?.code == .halted)
        #expect(rack.admin(.status, to: 0)?.status?.platform == rack.platforms[0])
        #expect(!rack.cores[0].admits(rack.platforms[1]))
    }

    @Test("an event that arrives while a ledger write is outstanding is handled after its outcome")
    func eventsWaitForWrites() throws {
        var rack = CoreRack(count: 3)
        rack.connectAll()
        let request = rack.initialRequest
        var core = rack.cores[0]
        _ = core.handle(.admin(.reconfigure(rack.ticket(request, for: 0)), request: 1))
        #expect(core.handle(.admin(.status, request: 2)).isEmpty)
        let after = core.handle(.ledgerWritten(generation: core.generation + 1))
        let replies = after.compactMap { if case .reply(let id, _) = $0 { id } else { nil } }
        #expect(replies == [1, 2])
    }

    @Test("setPeers dials the new peers that sort after this node and answers only once the agent state is written")
    func setPeers() throws {
        var rack = CoreRack(count: 3)
        let newcomer = PlatformId(part: "kr", serial: "sn-9")
        let address = PeerAddress(host: "127.0.0.1", port: 7999)
        var core = rack.cores[0]
        let actions = core.handle(.admin(.setPeers([newcomer: address]), request: 1))
        #expect(actions.contains(.connect(newcomer, at: address)))
        #expect(!actions.contains { if case .reply = $0 { true } else { false } })
        #expect(core.handle(.agentStateSaved(generation: core.agentState.generation)) == [.reply(1, AdminResponse())])
        #expect(core.agentState.peers == [newcomer.description: address.description])
        #expect(core.admits(newcomer))
        // The same again is answered at once: nothing to write.
        #expect(core.handle(.admin(.setPeers([newcomer: address]), request: 2)) == [.reply(2, AdminResponse())])

        // A failed write is reported and rolled back, so that asking again writes again.
        rack.failStateWrite = [1]
        #expect(rack.admin(.setPeers([newcomer: address]), to: 1)?.error?.code == .stateWrite)
        #expect(rack.cores[1].agentState.peers.isEmpty)
        #expect(rack.cores[1].isDialing(newcomer))  // dialed all the same
        #expect(rack.admin(.setPeers([newcomer: address]), to: 1)?.error == nil)
        #expect(rack.cores[1].agentState.peers == [newcomer.description: address.description])
    }

    @Test("peers named in the configuration file win over learnt ones")
    func configuredPeersWin() {
        var rack = CoreRack(count: 3)
        let configured = rack.cores[0].addressBook[rack.platforms[1]]
        #expect(rack.admin(.setPeers([rack.platforms[1]: PeerAddress(host: "10.0.0.1", port: 1)]), to: 0)?.error == nil)
        #expect(rack.cores[0].addressBook[rack.platforms[1]] == configured)
        #expect(rack.cores[0].agentState.peers.isEmpty)
    }

    @Test("admission: configured peers and configuration members, never itself or a stranger")
    func admission() throws {
        let rack = try Self.setUp()
        let core = rack.cores[0]
        #expect(core.admits(rack.platforms[1]))
        #expect(!core.admits(rack.platforms[0]))
        #expect(!core.admits(PlatformId(part: "kr", serial: "stranger")))
    }

    @Test("dialing: only the peers whose platform id sorts after this node's")
    func dialing() {
        var rack = CoreRack(count: 3)
        rack.deliver(.started(listenPort: 7000), to: 1)
        let dialed = rack.log[1].compactMap { if case .connect(let peer, _) = $0 { peer } else { nil } }
        #expect(dialed == [rack.platforms[2]])
        #expect(rack.cores[1].isDialing(rack.platforms[2]))
        #expect(!rack.cores[1].isDialing(rack.platforms[0]))
    }

    @Test("dial attempts: backoff after a failure or refusal, at once after a closed channel, none when connected")
    func dialAttempts() throws {
        var rack = CoreRack(count: 3)
        rack.deliver(.started(listenPort: 7000), to: 0)
        var core = rack.cores[0]
        let peer = rack.platforms[1]
        let address = try #require(core.addressBook[peer])
        #expect(core.nextTick == nil)  // both attempts are under way

        func connects(_ actions: [Core.Action]) -> [PlatformId] {
            actions.compactMap { if case .connect(let peer, let at) = $0, at == address { peer } else { nil } }
        }
        // Unreachable: due between 40 and 60 ms later (50 ms ± 20 %); a tick before that starts nothing.
        let failed = core.handle(.dialEnded(peer, .unreachable(reason: "connection refused"), now: .seconds(1)))
        let logged = failed.compactMap { if case .log(let line) = $0 { line } else { nil } }
        #expect(logged.map(\.message) == ["cannot reach peer; retrying with backoff"])
        #expect(logged.first?.metadata["attempts"] == "1")
        let due = try #require(core.nextTick)
        #expect(due >= .seconds(1) + .milliseconds(40) && due <= .seconds(1) + .milliseconds(60))
        #expect(connects(core.handle(.tick(now: due - .milliseconds(1)))).isEmpty)
        #expect(connects(core.handle(.tick(now: due))) == [peer])
        #expect(core.nextTick == nil)

        // The second failure doubles the delay (80–120 ms) and is not logged (the first and every tenth are).
        let second = core.handle(.dialEnded(peer, .refused, now: .seconds(2)))
        #expect(!second.contains { if case .log = $0 { true } else { false } })
        let later = try #require(core.nextTick) - .seconds(2)
        #expect(later >= .milliseconds(80) && later <= .milliseconds(120))

        // A channel that was up and closed: dialled again at once, backoff reset.
        #expect(connects(core.handle(.tick(now: .seconds(3)))) == [peer])
        #expect(connects(core.handle(.dialEnded(peer, .closed, now: .seconds(4)))) == [peer])
        _ = core.handle(.dialEnded(peer, .unreachable(reason: "timeout"), now: .seconds(5)))
        let reset = try #require(core.nextTick) - .seconds(5)
        #expect(reset >= .milliseconds(40) && reset <= .milliseconds(60))

        // Connected meanwhile (the peer dialled this node): nothing is started, checked again later.
        _ = core.handle(.peerAttached(peer, connection: 77))
        #expect(connects(core.handle(.tick(now: .seconds(6)))).isEmpty)
        #expect(try #require(core.nextTick) > .seconds(6))

        // Stopping: no attempt is due or started any more.
        _ = core.handle(.stopping)
        #expect(core.nextTick == nil)
        #expect(connects(core.handle(.tick(now: .seconds(60)))).isEmpty)
        #expect(connects(core.handle(.dialEnded(peer, .closed, now: .seconds(61)))).isEmpty)
    }

    @Test("channels: a reconnect closes the old channel; frames on a stale or malformed channel close it")
    func channels() throws {
        var rack = try Self.setUp()
        var core = rack.cores[0]
        let peer = rack.platforms[1]
        let old = rack.channel[0][1]
        let replaced = core.handle(.peerAttached(peer, connection: 900))
        #expect(replaced.contains(.close(connection: old)))
        #expect(core.isAttached(peer, connection: 900))
        let stale = core.handle(
            .received(Message(rackId: rack.rackId, kind: .getShare(Epoch(1))), from: peer, connection: old))
        #expect(stale == [.close(connection: old)])
        let malformed = core.handle(.malformedFrame(from: peer, connection: 900, code: "TQ-WIRE-TRUNCATED"))
        #expect(malformed.contains(.close(connection: 900)))
        // A detach of a channel that is no longer the peer's changes nothing.
        #expect(core.handle(.peerDetached(peer, connection: old)).isEmpty)
        rack.cores[0] = core
    }

    @Test("a Prepare beyond reach of the commit is refused and counted in the status, with no ledger write")
    func rejectedCounted() throws {
        let rack = try Self.setUp()
        var core = rack.cores[0]
        let committed = try #require(core.status().latestCommitted)
        let forger = rack.platforms[2]
        let forged = try Configuration(
            rackId: rack.rackId, epoch: Epoch(UInt64.max), coordinator: forger, members: committed.members,
            threshold: committed.threshold, encryptedRackSecrets: nil)
        let share = try Share(x: 3, y: SecretBytes([UInt8](repeating: 9, count: 32)))
        #expect(core.status().rejected == 0)
        let actions = core.handle(
            .received(
                Message(
                    rackId: rack.rackId,
                    kind: .prepare(
                        forged, share,
                        TestOperator.ticket(
                            ReconfigureRequest(
                                rackId: rack.rackId, epoch: forged.epoch, lastCommittedEpoch: 1,
                                members: Set(forged.members.keys), threshold: forged.threshold),
                            coordinator: forger))), from: forger,
                connection: rack.channel[0][2]))
        #expect(!actions.contains { if case .writeLedger = $0 { true } else { false } })
        #expect(!actions.contains { if case .send = $0 { true } else { false } })
        #expect(core.status().rejected == 1)
        #expect(core.status().highestEpochSeen == Epoch(1))
    }

    @Test("disk keys: refused before commit and for unknown disks; each node's its own for one epoch")
    func diskKeys() throws {
        var fresh = CoreRack(count: 3)
        #expect(fresh.admin(.diskKey(disk: "data0", epoch: nil), to: 0)?.error?.code == .notCommitted)
        #expect(fresh.admin(.diskKey(disk: "nope", epoch: nil), to: 0)?.error?.code == .diskUnknown)
        var rack = try Self.setUp()
        let answer0 = rack.admin(.diskKey(disk: "data0", epoch: nil), to: 0)
        let answer1 = rack.admin(.diskKey(disk: "data0", epoch: nil), to: 1)
        let key0 = try #require(answer0)
        let key1 = try #require(answer1)
        #expect(key0.keyEpoch == Epoch(1))
        #expect(key0.key?.count == 64)
        #expect(key1.key?.count == 64)
        // Bound to the platform id (review L10): node 2's data0 has another key.
        #expect(key0.key != key1.key)
        #expect(!key0.description.contains(key0.key ?? "-"))
        // The disk is keyed under this release's scheme: the earlier scheme's key is not given.
        let legacy = rack.admin(.diskKey(disk: "data0", epoch: nil, scheme: .diskOnly), to: 0)
        #expect(legacy?.error?.code == .request)
        #expect(legacy?.key == nil)
        let future = rack.admin(.diskKey(disk: "data0", epoch: Epoch(5)), to: 0)
        #expect(future?.error?.code == AdminError.Code(LoadRackSecretError.Code.notCommitted))
    }

    @Test("re-key bookkeeping: after a rotation disks are reported from the epoch they use until diskRekeyed")
    func rekeyBookkeeping() throws {
        var rack = try Self.setUp(disks: ["data0", "data1"])
        let rotation = rack.operate(members: Set(rack.platforms), threshold: 2, alwaysNewEpoch: true)
        #expect(rotation.finished?.epoch == Epoch(2))
        #expect(rack.cores[0].status().unlockedEpoch == Epoch(2))
        #expect(
            rack.cores[0].status().rekey == [
                DiskRekey(disk: "data0", from: DiskKeyVersion(1), to: DiskKeyVersion(2)),
                DiskRekey(disk: "data1", from: DiskKeyVersion(1), to: DiskKeyVersion(2)),
            ])
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(7)), to: 0)?.error?.code == .request)
        #expect(rack.admin(.diskRekeyed(disk: "other", epoch: Epoch(2)), to: 0)?.error?.code == .diskUnknown)
        // A write that fails records nothing: the re-key keeps being reported.
        rack.failStateWrite = [0]
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(2)), to: 0)?.error?.code == .stateWrite)
        #expect(rack.cores[0].status().rekey.count == 2)
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(2)), to: 0)?.error == nil)
        #expect(
            rack.cores[0].status().rekey == [DiskRekey(disk: "data1", from: DiskKeyVersion(1), to: DiskKeyVersion(2))])
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(1)), to: 0)?.error?.code == .request)
        // Both epochs' keys stay derivable (the chain), and differ.
        let old = rack.admin(.diskKey(disk: "data1", epoch: Epoch(1)), to: 0)?.key
        let new = rack.admin(.diskKey(disk: "data1", epoch: nil), to: 0)?.key
        #expect(old != nil && new != nil && old != new)
    }

    @Test(
        "a disk an earlier release keyed (disk-only key) is reported for re-keying at the same epoch; its old key is given only until it is re-keyed"
    )
    func earlierReleaseDiskMigrates() throws {
        var rack = try Self.setUp()
        // What an earlier release's agent state holds: the epoch each disk is keyed under, no scheme.
        for index in 0..<2 { rack.cores[index].agentState.diskSchemes = [:] }
        #expect(rack.cores[0].agentState.keyed("data0") == DiskKeyVersion(1, .diskOnly))
        #expect(
            rack.cores[0].status().rekey == [
                DiskRekey(disk: "data0", from: DiskKeyVersion(1, .diskOnly), to: DiskKeyVersion(1))
            ])
        #expect(rack.cores[0].status().rekey.map(\.summary) == ["data0 1(v1)→1"])
        // The old key, to re-key from: the same on both nodes (that is what is being fixed); the new ones differ.
        let old0 = try #require(rack.admin(.diskKey(disk: "data0", epoch: nil, scheme: .diskOnly), to: 0)?.key)
        let old1 = try #require(rack.admin(.diskKey(disk: "data0", epoch: nil, scheme: .diskOnly), to: 1)?.key)
        let new0 = try #require(rack.admin(.diskKey(disk: "data0", epoch: nil), to: 0)?.key)
        #expect(old0 == old1)
        #expect(old0 != new0)
        // Reported re-keyed (to epoch 1's key of this release): nothing more to do, and the old key is refused.
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(1)), to: 0)?.error == nil)
        #expect(rack.cores[0].status().rekey.isEmpty)
        #expect(rack.cores[0].agentState.keyed("data0") == DiskKeyVersion(1))
        let refused = rack.admin(.diskKey(disk: "data0", epoch: nil, scheme: .diskOnly), to: 0)
        #expect(refused?.error?.code == .request)
        #expect(refused?.key == nil)
        // The agent state carries the scheme across a restart, and one written before schemes reads as disk-only.
        let encoded = try JSONEncoder().encode(rack.cores[0].agentState)
        #expect(try JSONDecoder().decode(AgentState.self, from: encoded).keyed("data0") == DiskKeyVersion(1))
        let earlier = try JSONDecoder().decode(
            AgentState.self, from: Data(#"{"generation": 3, "disks": {"data0": 2}}"#.utf8))
        #expect(earlier.keyed("data0") == DiskKeyVersion(2, .diskOnly))
    }

    @Test("the agent state's generation saturates at its end, for every kind of write (review L4)")
    func agentStateGenerationSaturates() throws {
        var rack = try Self.setUp()
        rack.cores[0].agentState.generation = .max
        let written = rack.cores[0].recordVolume(disk: "data0", plan: nil, keyed: DiskKeyVersion(Epoch(1), .diskOnly))
        let recorded = try #require(written)
        #expect(recorded.generation == .max)
        #expect(rack.admin(.diskRekeyed(disk: "data0", epoch: Epoch(1)), to: 0)?.error == nil)
        #expect(rack.cores[0].agentState.generation == .max)
        #expect(rack.cores[0].agentState.keyed("data0") == DiskKeyVersion(1))
    }

    @Test("a node that restarts from its ledger unlocks again once it has its peers' shares")
    func restartUnlocks() throws {
        var rack = try Self.setUp()
        let written = rack.cores[0].durable
        let generation = rack.cores[0].generation
        rack.cores[0] = Core(
            settings: rack.cores[0].settings, state: written, generation: generation,
            agentState: rack.cores[0].agentState, operatorVerifier: TestOperator.key.verifier,
            random: SeededRandomSource(seed: 99))
        #expect(rack.cores[0].status().unlockedEpoch == nil)
        #expect(rack.admin(.diskKey(disk: "data0", epoch: nil), to: 0)?.error?.code == .locked)
        rack.deliver(.peerAttached(rack.platforms[1], connection: rack.channel[0][1]), to: 0)
        rack.deliver(.peerAttached(rack.platforms[0], connection: rack.channel[1][0]), to: 1)
        #expect(rack.cores[0].status().unlockedEpoch == Epoch(1))
    }

    @Test(
        "the admin edge: a request without what its operation needs, or with a bad peer, is refused as NODE-ADMIN-REQUEST"
    )
    func adminEdge() throws {
        let me = PlatformId(part: "kr", serial: "sn-1")
        let rack = try Self.setUp()
        let config = try #require(rack.cores[0].status().latestCommitted)
        let request = ReconfigureRequest(
            rackId: rack.rackId, epoch: 2, lastCommittedEpoch: 1, members: Set(config.members.keys), threshold: 2)
        for request in [
            AdminRequest(.commit), AdminRequest(.reconfigure), AdminRequest(.prepareAndCommit),
            AdminRequest(.commit, epoch: 1), AdminRequest(.expunge),
            AdminRequest(.prepareAndCommit, configuration: config),
            AdminRequest(.diskKey), AdminRequest(.diskRekeyed, disk: "data0"), AdminRequest(.setPeers),
            AdminRequest(.setPeers, peers: ["not-a-platform": "127.0.0.1:1"]),
            AdminRequest(.setPeers, peers: ["kr:sn-2": "no-port"]),
            AdminRequest(.luksFormat), AdminRequest(.luksBind, existingKey: "c2VjcmV0"),
            AdminRequest(.luksBind, disk: "data0"), AdminRequest(.luksBind, disk: "data0", existingKey: "not base64!"),
            AdminRequest(.luksBind, disk: "data0", existingKey: ""),
        ] {
            #expect(throws: AdminError(.request, "")) { try AdminCommand(request, localPlatform: me) }
        }
        #expect(
            (try? AdminCommand(AdminRequest(.setPeers, peers: ["kr:sn-1": "127.0.0.1:1"]), localPlatform: me))
                == .setPeers([:]))
        for command in [
            AdminCommand.status, .commit(Epoch(3), TestOperator.signed(config).signature),
            .diskKey(disk: "d", epoch: nil),
            .prepareAndCommit(TestOperator.signed(config)), .expunge(TestOperator.signed(config)),
            .reconfigure(TestOperator.ticket(request, coordinator: me)),
            .diskRekeyed(disk: "d", epoch: Epoch(2)),
            .setPeers([PlatformId(part: "kr", serial: "sn-2"): PeerAddress(host: "h", port: 1)]),
            .luksFormat(disk: "data0"), .luksBind(disk: "data0", existingKey: SecretBytes(Array("secret".utf8))),
        ] {
            #expect((try? AdminCommand(AdminRequest(command: command), localPlatform: me)) == command)
        }
    }

    @Test("a core asked for a volume command answers that it manages no volumes (the shell's volume manager does)")
    func volumeCommandsAreTheShells() throws {
        var rack = CoreRack(count: 1)
        let reply = rack.admin(.luksFormat(disk: "data0"), to: 0)
        let answer = try #require(reply)
        #expect(answer.error?.code == .request)
        #expect(answer.volume == nil)
    }

    @Test("a luks-bind command never prints the existing key, however it is described")
    func luksBindRedacted() {
        let key = SecretBytes(Array("correct horse battery staple".utf8))
        let command = AdminCommand.luksBind(disk: "data0", existingKey: key)
        for text in [String(describing: command), String(reflecting: command), "\(command)"] {
            #expect(!text.contains("correct horse"), "\(text)")
            #expect(!text.contains("636f7272656374"), "\(text)")
            #expect(text.contains("data0"))
        }
    }
}
