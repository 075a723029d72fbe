import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// What a node keeps beside its ledger (peer addresses learnt from the
/// operator, the epoch each disk is keyed under, alarms), and a node that
/// cannot write its ledger.
@Suite("A node's state across restarts")
struct RackStateTests {
    @Test("a node added later is found after a full restart, though no configuration file names it")
    func learntPeersOutliveRestart() async throws {
        try await withRack(count: 4) { rack in
            let added = rack.members[3]
            // Nodes 1-3 are configured without node 4: only `rack add` tells them where it listens.
            for member in rack.members.prefix(3) {
                var configuration = member.configuration
                configuration.peers[added.platform] = nil
                try configuration.json().write(to: URL(fileURLWithPath: member.configurationFile))
            }
            try await setUp(rack, [0, 1, 2], threshold: 2)
            try await rack.start(3)
            let grown = try await rack.rackOperator([0, 1, 2]).run(.add([added.socket]))
            try await rack.waitUntil(Array(0..<4), "unlocked with node 4") { $0.unlockedEpoch == grown.epoch }

            // A power cut. Node 4 sorts last, so it dials nobody: the others must dial it.
            await rack.stopAll()
            for index in 0..<4 { try rack.launch(index) }
            let statuses = try await rack.waitUntil(Array(0..<4), "unlocked and connected to all three others") {
                $0.unlockedEpoch == grown.epoch && $0.connected.count == 3
            }
            #expect(statuses.allSatisfy { $0.alarms.isEmpty && $0.ledgerProblems.isEmpty })
        }
    }

    @Test("re-keying is reported from the epoch each disk uses, until the operator reports it done")
    func rekeyTracking() async throws {
        try await withRack(count: 3) { rack in
            let first = try await setUp(rack, [0, 1, 2], threshold: 2)
            #expect(try #require(await rack.statuses([0])[0]).rekey.isEmpty)
            let second = try await rack.rackOperator().run(.rotate)
            let third = try await rack.rackOperator().run(.rotate)
            try await rack.waitUntil([0, 1, 2], "unlocked at the third epoch") { $0.unlockedEpoch == third.epoch }
            // Two commits since the disk was keyed: it is still under the first epoch, not the second.
            for status in await rack.statuses([0, 1, 2]) {
                #expect(
                    status?.rekey == [
                        DiskRekey(disk: "data0", from: DiskKeyVersion(first.epoch), to: DiskKeyVersion(third.epoch))
                    ])
            }
            // The operator re-keys node 1's disk (old and new keys from disk-key) and says so.
            #expect(try await diskKey(rack, 0, epoch: first.epoch) != diskKey(rack, 0, epoch: third.epoch))
            let keyrack = try keyrackExecutable()
            let socket = rack.members[0].socket
            let done = try await runToCompletion(
                keyrack,
                ["node", "disk-rekeyed", "--admin", socket, "--disk", "data0", "--epoch", "\(third.epoch.value)"])
            #expect(done.status == 0, "\(done.errors)")
            #expect(done.output.contains("data0: keyed under epoch \(third.epoch.value)"))
            // Refused: going back, an epoch never committed, a disk the node does not have.
            for (disk, epoch, expected) in [
                ("data0", second.epoch.value, "cannot go back"),
                ("data0", third.epoch.value + 5, "is not committed on this node"),
                ("data9", third.epoch.value, "NODE-DISK-UNKNOWN"),
            ] {
                let refused = try await runToCompletion(
                    keyrack, ["node", "disk-rekeyed", "--admin", socket, "--disk", disk, "--epoch", "\(epoch)"])
                #expect(refused.status != 0)
                #expect(refused.errors.contains(expected), "\(refused.errors)")
            }
            // Recorded durably: after a full restart node 1 has nothing to re-key, the others still do.
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            let statuses = try await rack.waitUntil([0, 1, 2], "unlocked again") { $0.unlockedEpoch == third.epoch }
            #expect(statuses[0].rekey.isEmpty)
            #expect(
                statuses[1].rekey == [
                    DiskRekey(disk: "data0", from: DiskKeyVersion(first.epoch), to: DiskKeyVersion(third.epoch))
                ])
            let table = try await runToCompletion(
                keyrack, ["rack", "status", "--nodes", rack.sockets().joined(separator: ",")])
            #expect(table.output.contains("data0 \(first.epoch.value)→\(third.epoch.value)"))
        }
    }

    @Test("an agent state that cannot be written is reported (NODE-STATE-WRITE) and nothing is taken as recorded")
    func agentStateWriteFailure() async throws {
        try await withRack(count: 3) { rack in
            let first = try await setUp(rack, [0, 1, 2], threshold: 2)
            let rotated = try await rack.rackOperator().run(.rotate)
            try await rack.waitUntil([0], "unlocked at the new epoch") { $0.unlockedEpoch == rotated.epoch }
            // A non-empty directory where node 1's second agent.sealed must go: its writes fail.
            let file = URL(fileURLWithPath: rack.members[0].configuration.ledger[1])
                .appendingPathComponent("agent.sealed")
            try? FileManager.default.removeItem(at: file)
            try FileManager.default.createDirectory(
                at: file.appendingPathComponent("blocker"), withIntermediateDirectories: true)
            let socket = rack.members[0].socket
            for request in [
                AdminRequest(.diskRekeyed, epoch: rotated.epoch, disk: "data0"),
                AdminRequest(.setPeers, peers: ["kr-demo:sn-0042": "127.0.0.1:9"]),
            ] {
                // Refused every time it is asked, not only the first: nothing was taken as done.
                for _ in 0..<2 {
                    let refused = await #expect(throws: AdminError.self) {
                        try await AdminSocket.perform(request, path: socket)
                    }
                    #expect(refused?.code == .stateWrite)
                }
            }
            let status = try #require(await rack.statuses([0])[0])
            #expect(
                status.rekey == [
                    DiskRekey(disk: "data0", from: DiskKeyVersion(first.epoch), to: DiskKeyVersion(rotated.epoch))
                ])
            // Repaired, the same request is recorded.
            try FileManager.default.removeItem(at: file)
            _ = try await AdminSocket.perform(
                AdminRequest(.diskRekeyed, epoch: rotated.epoch, disk: "data0"), path: socket)
            #expect(try #require(await rack.statuses([0])[0]).rekey.isEmpty)
        }
    }

    @Test(
        "a node that cannot write its ledger halts: the operator is told, never ok, and it recovers from the other copy"
    )
    func ledgerWriteFailureHalts() async throws {
        try await withRack(count: 3) { rack in
            let first = try await setUp(rack, [0, 1, 2], threshold: 2)
            try await rack.waitUntil([0, 1, 2], "connected to each other") { $0.connected.count == 2 }
            let platforms = Set(rack.members.map(\.platform))
            let next = try #require(first.epoch.next)
            let signer = try OperatorIdentity(directory: rack.operatorDirectory)
            let ticket = ReconfigureTicket(
                ReconfigureRequest(
                    rackId: rack.rackId, epoch: next, lastCommittedEpoch: first.epoch, members: platforms,
                    threshold: 2),
                coordinator: rack.members[1].platform)
            _ = try await AdminSocket.perform(
                AdminRequest(.reconfigure, ticket: SignedTicket(ticket, signature: try signer.sign(.ticket(ticket)))),
                path: rack.members[1].socket)
            let prepared = try await rack.waitUntil([1], "every member prepared") {
                $0.coordinating?.acked.count == 3
            }
            let commit = try signer.sign(.commit(try #require(prepared[0].coordinating?.configuration)))
            // Node 1's first ledger directory stops taking writes: a directory where the file must go.
            let ledgerFile = URL(fileURLWithPath: rack.members[0].configuration.ledger[0]).appendingPathComponent(
                "ledger")
            try FileManager.default.removeItem(at: ledgerFile)
            try FileManager.default.createDirectory(
                at: ledgerFile.appendingPathComponent("blocker"), withIntermediateDirectories: true)
            let refused = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(
                    AdminRequest(.commit, epoch: next, signature: commit), path: rack.members[0].socket)
            }
            #expect(refused?.code == .halted)
            #expect(refused?.reason.contains("ledger cannot be written") == true)
            let halted = try #require(await rack.statuses([0])[0])
            #expect(halted.committedEpoch == first.epoch)  // the commit did not count
            #expect(halted.alarms.contains { $0.hasPrefix("NodeHalted") })
            let again = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(AdminRequest(.diskKey, disk: "data0"), path: rack.members[0].socket)
            }
            #expect(again?.code == .halted)
            // The others commit; node 1, repaired and restarted, reports the missing copy, catches up
            // from the other copy through its peers, and keeps the alarm.
            for index in [1, 2] {
                _ = try await AdminSocket.perform(
                    AdminRequest(.commit, epoch: next, signature: commit), path: rack.members[index].socket)
            }
            await rack.stop(0)
            try FileManager.default.removeItem(at: ledgerFile)
            try await rack.start(0)
            let recovered = try await rack.waitUntil([0], "caught up") { $0.unlockedEpoch == next }
            #expect(recovered[0].ledgerProblems.contains { $0.contains("missing while the other copy exists") })
            #expect(recovered[0].alarms.contains { $0.hasPrefix("NodeHalted") })
            try await expectSameSecret(rack, [0, 1])
        }
    }

    @Test(
        "a node whose ledger was rolled back or deleted refuses to start; --reinitialise starts it as new and it gets its share back"
    )
    func ledgerRollbackAndLoss() async throws {
        try await withRack(count: 3) { rack in
            try await setUp(rack, [0, 1, 2], threshold: 2)
            let member = rack.members[0]
            let files = member.configuration.ledger.map { URL(fileURLWithPath: $0).appendingPathComponent("ledger") }
            let old = try files.map { try Data(contentsOf: $0) }
            let rotated = try await rack.rackOperator().run(.rotate)
            try await rack.waitUntil([0, 1, 2], "unlocked at the new epoch") { $0.unlockedEpoch == rotated.epoch }
            await rack.stop(0)
            let current = try files.map { try Data(contentsOf: $0) }

            // The copies from before the rotation, restored: refused, and left as they are.
            for (file, bytes) in zip(files, old) { try bytes.write(to: file) }
            let rolledBack = await #expect(throws: LabError.self) { try await rack.start(0) }
            #expect(rolledBack?.code == .start)
            #expect(rolledBack?.reason.contains("exited with status 1") == true)
            #expect(rolledBack?.reason.contains("NODE-LEDGER-ROLLBACK") == true)
            #expect(try files.map { try Data(contentsOf: $0) } == old)

            // Both copies gone: refused too, and --reinitialise is refused while one exists.
            try current[1].write(to: files[1])
            let withCopy = await #expect(throws: LabError.self) {
                try await rack.start(0, arguments: ["--reinitialise"])
            }
            #expect(withCopy?.reason.contains("NODE-LEDGER-REINITIALISE") == true)
            #expect(try Data(contentsOf: files[1]) == current[1])
            for file in files { try? FileManager.default.removeItem(at: file) }
            let missing = await #expect(throws: LabError.self) { try await rack.start(0) }
            #expect(missing?.reason.contains("NODE-LEDGER-MISSING") == true)

            // Reinitialised, it starts with nothing; the others still unlock without it, and the
            // operator's next commit hands it a share again.
            try await rack.start(0, arguments: ["--reinitialise"])
            let fresh = try #require(await rack.statuses([0])[0])
            #expect(fresh.committedEpoch == nil)
            #expect(fresh.ledgerProblems.contains { $0.contains("reinitialised") })
            #expect(try await !diskKey(rack, 1).isEmpty)
            let again = try await rack.rackOperator().run(.rotate)
            try await rack.waitUntil([0, 1, 2], "unlocked after the reinitialised node got its share") {
                $0.unlockedEpoch == again.epoch
            }
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            try await rack.waitUntil([0, 1, 2], "unlocked after a full restart") { $0.unlockedEpoch == again.epoch }
        }
    }
}
