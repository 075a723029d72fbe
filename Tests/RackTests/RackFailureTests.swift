import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// Faults against real node processes: impostors, crashes at each
/// persistence point, damaged ledgers.
@Suite("A rack under faults")
struct RackFailureTests {
    @Test("a node whose certificate comes from another CA is refused by every peer")
    func foreignCertificateRefused() async throws {
        try await withRack(count: 4) { rack in
            try await setUp(rack, [1, 2, 3], threshold: 2)
            try await rack.waitUntil([1, 2, 3], "connected to each other") { $0.connected.count == 2 }
            // Another manufacturer's CA issues a certificate for the same platform id as node 1.
            try await withRack(count: 1) { other in
                let forged = other.members[0]
                #expect(forged.platform == rack.members[0].platform)
                var configuration = rack.members[0].configuration
                configuration.deviceKey = forged.configuration.deviceKey
                configuration.certificate = forged.configuration.certificate
                configuration.intermediate = forged.configuration.intermediate
                configuration.root = forged.configuration.root
                configuration.ledger = forged.configuration.ledger
                configuration.admin = forged.configuration.admin
                let file = other.directory.appendingPathComponent("impostor.json")
                try configuration.json().write(to: file)
                let impostor = try KeyrackProcess(["node", "run", "--config", file.path], environment: [:])
                defer { impostor.stop() }
                // It dials nodes 2–4 (their ids sort after its own) and is refused in the handshake.
                let deadline = ContinuousClock.now + .seconds(20)
                while !impostor.log.contains("cannot reach peer"), ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                // Refused in the handshake: no peer ever attached, on either side.
                let impostorStatus = try await AdminSocket.perform(AdminRequest(.status), path: configuration.admin)
                #expect(try #require(impostorStatus.status).connected.isEmpty)
                for status in await rack.statuses([1, 2, 3]) {
                    let status = try #require(status)
                    #expect(!status.connected.contains(rack.members[0].platform))
                    #expect(status.connected.count == 2)
                }
            }
        }
    }

    @Test("a node running other software (evidence outside the policy) gets no share")
    func evidenceOutsidePolicy() async throws {
        try await withRack(count: 4) { rack in
            let committed = try await setUp(rack, Array(0..<4), threshold: 3)
            // The same program with one byte appended: another measurement, same keys and certificate.
            let tampered = rack.directory.appendingPathComponent("keyrack-tampered")
            var program = try Data(contentsOf: try keyrackExecutable())
            program.append(0)
            try program.write(to: tampered)
            #expect(chmod(tampered.path, 0o755) == 0)
            await rack.stop(3)
            try await rack.start(3, executable: tampered.path)
            // Its peers refuse it in the attestation exchange, naming the rule; it never unlocks.
            let deadline = ContinuousClock.now + .seconds(20)
            while !rack.logTail(3, lines: 40).contains("refused"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(300))
            let status = try #require(await rack.statuses([3])[0])
            #expect(status.committedEpoch == committed.epoch)
            #expect(status.unlockedEpoch == nil)
            #expect(status.connected.isEmpty)
            #expect(rack.logTail(3, lines: 40).contains("executable"))
            // Its peers back off between attempts instead of dialling it again at once.
            try await Task.sleep(for: .seconds(2))
            let counters = try #require(await rack.statuses([0])[0]?.counters)
            let refusals = counters.attestationsFailed.values.reduce(0, +)
            #expect(refusals >= 1 && refusals <= 15, "node 1 attested the refused node \(refusals) times in about 3 s")
            let locked = await #expect(throws: AdminError.self) { try await diskKey(rack, 3) }
            #expect(locked?.code == .locked)
            for status in await rack.statuses([0, 1, 2]) {
                #expect(status?.connected.contains(rack.members[3].platform) == false)
            }
            // The genuine program on the same node unlocks again.
            await rack.stop(3)
            try await rack.start(3)
            try await rack.waitUntil([3], "unlocked") { $0.unlockedEpoch == committed.epoch }
        }
    }

    @Test(
        "a node killed right after each ledger write of a rotation recovers, and the rotation completes",
        arguments: [1, 2]
    )
    func crashAtEachPersistencePoint(point: Int) async throws {
        try await withRack(count: 4) { rack in
            let all = Array(0..<4)
            var latest = try await setUp(rack, all, threshold: 2)
            // The coordinator, then an ordinary member, crashes at this persistence point. The operator
            // picks the coordinator of epoch e among the members sorted by platform id, at e mod N.
            for role in ["coordinator", "member"] {
                let coordinator = Int((latest.epoch.value + 1) % UInt64(all.count))
                let victim = role == "coordinator" ? coordinator : (coordinator + 1) % all.count
                await rack.stop(victim)
                let logStart = (try? Data(contentsOf: URL(fileURLWithPath: rack.members[victim].logFile)))?.count ?? 0
                try await rack.start(victim, environment: ["KEYRACK_TEST_CRASH_AFTER_PERSIST": "\(point)"])
                try await rack.waitUntil([victim], "unlocked") { $0.unlockedEpoch == latest.epoch }
                var rackOperator = try rack.rackOperator()
                rackOperator.stallPolls = 40
                let rotation = Task { try await rackOperator.run(.rotate) }
                // Wait for the crash (the SIGKILL the hook sends itself), then bring the node back.
                let deadline = ContinuousClock.now + .seconds(30)
                while rack.exitStatus(victim) == nil, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(rack.exitStatus(victim) == SIGKILL, "node \(victim + 1) did not reach ledger write \(point)")
                let log = try Data(contentsOf: URL(fileURLWithPath: rack.members[victim].logFile)).dropFirst(logStart)
                let coordinated = String(decoding: log, as: UTF8.self).contains("coordinating a reconfiguration")
                #expect(coordinated == (role == "coordinator"), "node \(victim + 1) as \(role)")
                await rack.stop(victim)
                try await rack.start(victim)
                let rotated = try await rotation.value
                #expect(rotated.epoch > latest.epoch)
                latest = rotated
                let statuses = try await rack.waitUntil(all, "unlocked after the crash") {
                    $0.unlockedEpoch == rotated.epoch
                }
                #expect(statuses.allSatisfy { $0.alarms.isEmpty })
                try await expectSameSecret(rack, all)
            }
        }
    }

    @Test("a corrupt ledger copy is reported and the other copy used; two corrupt copies stop the node")
    func corruptLedgerCopy() async throws {
        try await withRack(count: 3) { rack in
            let committed = try await setUp(rack, [0, 1, 2], threshold: 2)
            let key = try await diskKey(rack, 0)
            await rack.stop(0)
            let ledger = rack.members[0].configuration.ledger
            let first = URL(fileURLWithPath: ledger[0]).appendingPathComponent("ledger")
            var bytes = try Data(contentsOf: first)
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: first)
            try await rack.start(0)
            let status = try await rack.waitUntil([0], "unlocked") { $0.unlockedEpoch == committed.epoch }
            #expect(status[0].ledgerProblems.count == 1)
            #expect(status[0].ledgerProblems.first?.contains(first.path) == true)
            #expect(try await diskKey(rack, 0) == key)

            await rack.stop(0)
            let second = URL(fileURLWithPath: ledger[1]).appendingPathComponent("ledger")
            try Data(try Data(contentsOf: second).prefix(20)).write(to: second)
            try bytes.write(to: first)
            try rack.launch(0)
            let deadline = ContinuousClock.now + .seconds(20)
            while rack.exitStatus(0) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(rack.exitStatus(0) == 1)
            #expect(rack.logTail(0).contains("no ledger copy can be opened"))
        }
    }

    @Test("a node whose operator CA bundle is missing or not a CA bundle stops at start, naming identity.operatorCA")
    func badOperatorCA() async throws {
        try await withRack(count: 3) { rack in
            let member = rack.members[0]
            let bundle = rack.directory.appendingPathComponent("not-an-operator-ca.pem")
            // A device certificate is not an intermediate-then-root bundle; a missing file is not one either.
            try Data(contentsOf: URL(fileURLWithPath: member.configuration.certificate)).write(to: bundle)
            for path in [bundle.path, rack.directory.appendingPathComponent("absent.pem").path] {
                var configuration = member.configuration
                configuration.operatorCA = path
                try configuration.json().write(to: URL(fileURLWithPath: member.configurationFile))
                let refused = await #expect(throws: LabError.self) { try await rack.start(0) }
                #expect(refused?.reason.contains("exited with status 1") == true, "\(String(describing: refused))")
                #expect(refused?.reason.contains("identity.operatorCA") == true, "\(String(describing: refused))")
            }
            // Nothing was written for it: with its bundle back it starts as a new node.
            #expect(!FileManager.default.fileExists(atPath: member.configuration.ledger[0] + "/ledger"))
            try member.configuration.json().write(to: URL(fileURLWithPath: member.configurationFile))
            try await rack.start(0)
        }
    }

    @Test("the admin socket is private to the node's owner, and a disk key is only given for the node's own disks")
    func adminSocket() async throws {
        try await withRack(count: 3) { rack in
            try await setUp(rack, [0, 1, 2], threshold: 2)
            var info = stat()
            #expect(stat(rack.members[0].socket, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)
            let unknown = await #expect(throws: AdminError.self) { try await diskKey(rack, 0, disk: "nope") }
            #expect(unknown?.code == .diskUnknown)
            let future = await #expect(throws: AdminError.self) { try await diskKey(rack, 0, epoch: Epoch(99)) }
            #expect(future?.code == AdminError.Code(LoadRackSecretError.Code.notCommitted))
            let malformed = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(AdminRequest(.commit), path: rack.members[0].socket)
            }
            #expect(malformed?.code == .request)
            let badPeer = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(
                    AdminRequest(.setPeers, peers: ["kr-demo:sn-0009": "nowhere"]), path: rack.members[0].socket)
            }
            #expect(badPeer?.code == .request)
            // A frame that is not a JSON request gets a clear answer, and the node carries on.
            let garbage = try rawAdminExchange(rack.members[0].socket, payload: Array("not json".utf8))
            #expect(garbage.contains("NODE-ADMIN-REQUEST") && garbage.contains("malformed admin request"))
            #expect(try await AdminSocket.perform(AdminRequest(.status), path: rack.members[0].socket).status != nil)
            let gone = await #expect(throws: AdminError.self) {
                try await AdminSocket.perform(
                    AdminRequest(.status), path: rack.directory.appendingPathComponent("none.sock").path)
            }
            #expect(gone?.code == .unreachable)
        }
    }
}

/// Sends one raw frame (4-byte big-endian length, then `payload`) on the
/// admin socket at `path` and returns the answer frame's payload as text.
func rawAdminExchange(_ path: String, payload: [UInt8]) throws -> String {
    let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw AdminError(code: "TEST", reason: "socket") }
    defer { close(descriptor) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { bytes in
        for (index, byte) in path.utf8.prefix(bytes.count - 1).enumerated() { bytes[index] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard connected == 0 else { throw AdminError(code: "TEST", reason: "connect errno \(errno)") }
    let count = UInt32(payload.count)
    let frame =
        [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + payload
    guard write(descriptor, frame, frame.count) == frame.count else { throw AdminError(code: "TEST", reason: "write") }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let got = read(descriptor, &buffer, buffer.count)
        if got <= 0 { break }
        answer += buffer.prefix(got)
    }
    return String(decoding: answer.dropFirst(4), as: UTF8.self)
}

/// A node killed right after a ledger write in the other flows that persist:
/// catching up after a rotation it slept through, joining, being removed.
@Suite("A rack under faults: crashes beyond the rotation")
struct RackCrashTests {
    enum Flow: String, CaseIterable, CustomTestStringConvertible {
        /// A member down during a rotation boots, commits via CommitAdvance (write 1) and recomputes its share (write 2).
        case catchingUp
        /// A new node prepares (write 1) and commits (write 2) during `rack add`.
        case joining
        /// A removed node that was down is told by the operator that it was expunged (write 1).
        case beingRemoved
        var testDescription: String { rawValue }
    }

    static let cases: [(Flow, Int)] = [
        (.catchingUp, 1), (.catchingUp, 2), (.joining, 1), (.joining, 2), (.beingRemoved, 1),
    ]

    @Test("the node recovers and the flow completes", arguments: cases)
    func crashAndRecover(flow: Flow, point: Int) async throws {
        try await withRack(count: 4) { rack in
            let crash = ["KEYRACK_TEST_CRASH_AFTER_PERSIST": "\(point)"]
            let victim = 3
            func awaitCrash() async throws {
                let deadline = ContinuousClock.now + .seconds(30)
                while rack.exitStatus(victim) == nil, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(rack.exitStatus(victim) == SIGKILL, "node \(victim + 1) did not reach ledger write \(point)")
                await rack.stop(victim)
            }
            switch flow {
            case .catchingUp:
                try await setUp(rack, Array(0..<4), threshold: 2)
                await rack.stop(victim)
                var rotation = try rack.rackOperator()
                rotation.waitForDownMembers = .zero
                let rotated = try await rotation.run(.rotate)
                // Not waiting for its admin socket: the peers' CommitAdvance may reach it first.
                try rack.launch(victim, environment: crash)
                try await awaitCrash()
                try await rack.start(victim)
                try await rack.waitUntil(Array(0..<4), "unlocked at the rotated epoch") {
                    $0.unlockedEpoch == rotated.epoch
                }
            case .joining:
                try await setUp(rack, [0, 1, 2], threshold: 2)
                try await rack.start(victim, environment: crash)
                let joiner = try rack.rackOperator([0, 1, 2])
                let socket = rack.members[victim].socket
                let adding = Task { try await joiner.run(.add([socket])) }
                try await awaitCrash()
                try await rack.start(victim)
                let grown = try await adding.value
                #expect(grown.members[rack.members[victim].platform] != nil)
                try await rack.waitUntil(Array(0..<4), "unlocked with the new node") { $0.unlockedEpoch == grown.epoch }
            case .beingRemoved:
                try await setUp(rack, Array(0..<4), threshold: 2)
                await rack.stop(victim)
                var removal = try rack.rackOperator([0, 1, 2])
                removal.waitForDownMembers = .zero
                let shrunk = try await removal.run(.remove([rack.members[victim].platform]))
                // Its former peers refuse it at the handshake: the operator, run again over every
                // node, tells it (write 1) with the signed configuration that leaves it out.
                try await rack.start(victim, environment: crash)
                let again = try await rack.rackOperator().run(.remove([rack.members[victim].platform]))
                #expect(again == shrunk)
                try await awaitCrash()
                try await rack.start(victim)
                // What it wrote before the crash is what it knows: it was expunged.
                let status = try #require(await rack.statuses([victim])[0])
                #expect(status.expunged?.epoch == shrunk.epoch)
                #expect(status.unlockedEpoch == nil)
                return
            }
            try await expectSameSecret(rack, Array(0..<4))
            #expect(await rack.statuses(Array(0..<4)).allSatisfy { $0?.alarms.isEmpty == true })
        }
    }
}
