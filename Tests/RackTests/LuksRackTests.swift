import Foundation
import KeyrackCore
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import SecretSharing
import Testing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// LUKS2 volumes on a rack of `keyrack node run` processes with the real
/// `cryptsetup`: bound through the CLI, verified at every unlock, re-keyed
/// by every node at every rotation — also when a node is killed after each
/// re-key step. (No device-mapper in these containers: volumes are verified
/// with `open --test-passphrase`; a real machine opens the mapping.)
@Suite("LUKS2 volumes on a rack")
struct LuksRackTests {
    /// Gives nodes `indices` a LUKS2 image as disk data0 (verify mode), plus `extra` volumes, in their configuration files.
    static func addVolumes(
        _ rack: LocalRack, _ images: LuksImages, _ indices: [Int], extra: [Int: [LuksVolume]] = [:]
    ) throws -> [Int: String] {
        var devices: [Int: String] = [:]
        for index in indices {
            let member = rack.members[index]
            let image = try images.image("node-\(index + 1)-data0.img")
            var configuration = member.configuration
            configuration.volumes = [LuksVolume(disk: "data0", device: image, open: false)] + (extra[index] ?? [])
            configuration.disks = configuration.volumes.map(\.disk)
            try configuration.json().write(to: URL(fileURLWithPath: member.configurationFile))
            devices[index] = image
        }
        return devices
    }

    /// `keyrack node luks-bind` with the test passphrase on standard input.
    static func bind(_ rack: LocalRack, _ index: Int) async throws -> (status: Int32, output: String, errors: String) {
        let file = rack.members[index].configurationFile
        let keyrack = try keyrackExecutable()
        let passphrase = Data(LuksImages.passphrase.unsafeCopiedBytes)
        return try await offCooperativePool {
            let result = try runProcessBlocking(
                keyrack, ["node", "luks-bind", "--config", file, "--disk", "data0", "--existing-key-stdin"],
                input: passphrase)
            return (
                result.status, String(decoding: result.output, as: UTF8.self),
                String(decoding: result.errors, as: UTF8.self)
            )
        }
    }

    /// Node `index`'s data0 key at `epoch`, as raw bytes.
    static func key(_ rack: LocalRack, _ index: Int, epoch: Epoch) async throws -> SecretBytes {
        SecretBytes(try #require([UInt8](hex: try await diskKey(rack, index, epoch: epoch))))
    }

    static func volume(_ status: NodeStatus, _ disk: String = "data0") -> VolumeStatus? {
        status.volumes.first { $0.disk == disk }
    }

    /// Waits until node `indices`' data0 is verified under `epoch`.
    @discardableResult
    static func waitVerified(_ rack: LocalRack, _ indices: [Int], epoch: Epoch) async throws -> [NodeStatus] {
        try await rack.waitUntil(indices, "data0 verified under epoch \(epoch)") {
            volume($0)?.state == .verified && volume($0)?.epoch == epoch
        }
    }

    @Test("bound volumes are verified at every unlock and re-keyed by every node at a rotation")
    func bindVerifyRotate() async throws {
        try await withRack(count: 3) { rack in
            let images = try LuksImages(in: rack.directory)
            // Node 3 also has a volume whose device is missing: it is reported, and its data0 still verifies.
            let missing = LuksVolume(disk: "data1", device: images.path("absent.img"), open: false)
            let devices = try Self.addVolumes(rack, images, [0, 1, 2], extra: [2: [missing]])
            let first = try await setUp(rack, [0, 1, 2], threshold: 2)
            for status in try await rack.waitUntil(
                [0, 1, 2], "data0 reported unbound", { Self.volume($0)?.state == .unbound })
            {
                #expect(Self.volume(status)?.problem?.code.rawValue == "NODE-VOLUME-UNBOUND")
            }
            for index in 0..<3 {
                let bound = try await Self.bind(rack, index)
                #expect(bound.status == 0, "\(bound.errors)")
                #expect(bound.output == "data0: bound under epoch \(first.epoch) (keyslot 1), key verified\n")
            }
            // Each node's own key (keys include the platform id).
            var key1: [Int: SecretBytes] = [:]
            for index in 0..<3 { key1[index] = try await Self.key(rack, index, epoch: first.epoch) }
            #expect(Set(key1.values.map(\.unsafeCopiedBytes)).count == 3)
            for index in 0..<3 {
                let device = try #require(devices[index])
                let key1 = try #require(key1[index])
                #expect(try images.keyslots(device) == [0, 1])
                #expect(
                    try images.keyrackTokens(device) == [
                        KeyrackTokenSummary(
                            id: 0, epoch: first.epoch.value, keyslots: ["1"], rackId: rack.rackId.description,
                            diskId: "data0")
                    ])
                #expect(try images.cryptsetup.test(device, key: key1) == 1)
            }
            // A power cut: every node verifies its volume at unlock, from the header's token.
            await rack.stopAll()
            for index in 0..<3 { try rack.launch(index) }
            try await Self.waitVerified(rack, [0, 1, 2], epoch: first.epoch)
            // Each volume is settled on its own: data1's failure may be recorded after data0 verifies.
            let settled = try await rack.waitUntil([2], "data1 settled") { Self.volume($0, "data1")?.state != .locked }
            let absent = try #require(Self.volume(settled[0], "data1"))
            #expect(absent.state == .failed)
            #expect(absent.problem?.code.rawValue == "NODE-VOLUME-MISSING")

            // A rotation: every node re-keys its volume; the old epoch's key no longer opens it.
            let second = try await rack.rackOperator().run(.rotate)
            let rotated = try await Self.waitVerified(rack, [0, 1, 2], epoch: second.epoch)
            for (index, status) in rotated.enumerated() {
                let device = try #require(devices[index])
                let key1 = try #require(key1[index])
                let key2 = try await Self.key(rack, index, epoch: second.epoch)
                #expect(status.rekey.filter { $0.disk == "data0" }.isEmpty)
                #expect(try images.keyslots(device) == [0, 2])
                #expect(try images.keyrackTokens(device).map(\.epoch) == [second.epoch.value])
                #expect(try images.cryptsetup.test(device, key: key2) == 2)
                #expect(try !images.opens(device, key1))
                #expect(try images.opens(device, LuksImages.passphrase))
            }
            // node status prints the volumes; disk-rekeyed is refused for a bound volume.
            let keyrack = try keyrackExecutable()
            let printed = try await runToCompletion(
                keyrack, ["node", "status", "--config", rack.members[0].configurationFile])
            let decoded = try JSONDecoder().decode(NodeStatus.self, from: Data(printed.output.utf8))
            #expect(decoded.volumes == rotated[0].volumes)
            let refused = try await runToCompletion(
                keyrack,
                [
                    "node", "disk-rekeyed", "--config", rack.members[0].configurationFile, "--disk", "data0", "--epoch",
                    "\(second.epoch.value)",
                ])
            #expect(refused.status == 1)
            #expect(refused.errors.contains("NODE-VOLUME-BOUND"))
            // What keyrack-volumes.service runs at boot: ready on node 1; node 3's missing device fails it.
            let ready = try await runToCompletion(
                keyrack, ["node", "wait-volumes", "--config", rack.members[0].configurationFile, "--timeout", "20"])
            #expect(ready.status == 0, "\(ready.errors)")
            #expect(ready.output == "data0: ready under epoch \(second.epoch) (keyslot 2), key verified\n")
            let notReady = try await runToCompletion(
                keyrack, ["node", "wait-volumes", "--config", rack.members[2].configurationFile, "--timeout", "20"])
            #expect(notReady.status == 1)
            #expect(notReady.errors.contains("data1: failed (NODE-VOLUME-MISSING"), "\(notReady.errors)")
        }
    }

    @Test(
        "luks-bind reads --existing-key-file; luks-format keys an empty device by the rack alone; both through the CLI")
    func bindFromFileAndFormat() async throws {
        try await withRack(count: 3) { rack in
            let images = try LuksImages(in: rack.directory)
            let devices = try Self.addVolumes(rack, images, [0])
            let blank = try images.blank("node-2-data0.img")
            var configuration = rack.members[1].configuration
            configuration.volumes = [LuksVolume(disk: "data0", device: blank, open: false)]
            configuration.disks = configuration.volumes.map(\.disk)
            try configuration.json().write(to: URL(fileURLWithPath: rack.members[1].configurationFile))
            let first = try await setUp(rack, [0, 1, 2], threshold: 2)
            let keyrack = try keyrackExecutable()
            let config0 = rack.members[0].configurationFile
            let config1 = rack.members[1].configurationFile
            let device = try #require(devices[0])

            // The whole file is the key, as with cryptsetup --key-file: a trailing newline is another key.
            let keyFile = rack.directory.appendingPathComponent("existing.key").path
            let passphrase = Data(LuksImages.passphrase.unsafeCopiedBytes)
            #expect(
                FileManager.default.createFile(
                    atPath: keyFile, contents: passphrase + Data("\n".utf8), attributes: [.posixPermissions: 0o600]))
            let header = try images.bytes(device)
            let wrong = try await runToCompletion(
                keyrack, ["node", "luks-bind", "--config", config0, "--disk", "data0", "--existing-key-file", keyFile])
            #expect(wrong.status == 1)
            #expect(try images.bytes(device) == header, "a refused bind changed the header")
            let absent = try await runToCompletion(
                keyrack,
                [
                    "node", "luks-bind", "--config", config0, "--disk", "data0", "--existing-key-file",
                    keyFile + ".absent",
                ])
            #expect(absent.status == 1)
            #expect(absent.errors.contains("cannot read the existing key file \(keyFile).absent"), "\(absent.errors)")
            try passphrase.write(to: URL(fileURLWithPath: keyFile))
            let bound = try await runToCompletion(
                keyrack, ["node", "luks-bind", "--config", config0, "--disk", "data0", "--existing-key-file", keyFile])
            #expect(bound.status == 0, "\(bound.errors)")
            #expect(bound.output == "data0: bound under epoch \(first.epoch) (keyslot 1), key verified\n")
            #expect(try images.keyslots(device) == [0, 1])

            // luks-format: a new header whose only key is the rack's, with its token.
            let formatted = try await runToCompletion(
                keyrack, ["node", "luks-format", "--config", config1, "--disk", "data0"])
            #expect(formatted.status == 0, "\(formatted.errors)")
            #expect(formatted.output == "data0: formatted under epoch \(first.epoch) (keyslot 0), key verified\n")
            #expect(try images.keyslots(blank) == [0])
            #expect(
                try images.keyrackTokens(blank) == [
                    KeyrackTokenSummary(
                        id: 0, epoch: first.epoch.value, keyslots: ["0"], rackId: rack.rackId.description,
                        diskId: "data0")
                ])
            let key = try await Self.key(rack, 1, epoch: first.epoch)
            #expect(try images.opens(blank, key))
            #expect(try !images.opens(blank, LuksImages.passphrase))
            try await Self.waitVerified(rack, [0, 1], epoch: first.epoch)

            // Formatting a device that holds a header is refused and changes nothing.
            let formattedHeader = try images.bytes(blank)
            let again = try await runToCompletion(
                keyrack, ["node", "luks-format", "--config", config1, "--disk", "data0"])
            #expect(again.status == 1)
            #expect(again.errors.contains("NODE-VOLUME-NOT-EMPTY"), "\(again.errors)")
            #expect(try images.bytes(blank) == formattedHeader)

            // Both volumes follow the rack at a rotation.
            let second = try await rack.rackOperator().run(.rotate)
            try await Self.waitVerified(rack, [0, 1], epoch: second.epoch)
            #expect(try images.keyrackTokens(blank).map(\.epoch) == [second.epoch.value])
            #expect(try !images.opens(blank, key))
            #expect(try images.opens(blank, try await Self.key(rack, 1, epoch: second.epoch)))
        }
    }

    @Test("a node killed right after each re-key step recovers at restart and completes the re-key")
    func crashAfterEachRekeyStep() async throws {
        try await withRack(count: 3) { rack in
            let images = try LuksImages(in: rack.directory)
            let devices = try Self.addVolumes(rack, images, [0, 1, 2])
            var latest = try await setUp(rack, [0, 1, 2], threshold: 2)
            for index in 0..<3 { #expect(try await Self.bind(rack, index).status == 0) }
            let victim = 0
            let device = try #require(devices[victim])
            for step in RekeyPlan.Step.allCases {
                await rack.stop(victim)
                try await rack.start(victim, environment: ["KEYRACK_TEST_CRASH_AFTER_REKEY_STEP": step.rawValue])
                try await Self.waitVerified(rack, [victim], epoch: latest.epoch)
                let old = try await Self.key(rack, victim, epoch: latest.epoch)
                var rackOperator = try rack.rackOperator()
                rackOperator.waitForDownMembers = .milliseconds(200)
                let next = try await rackOperator.run(.rotate)
                let deadline = ContinuousClock.now + .seconds(30)
                while rack.exitStatus(victim) == nil, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(rack.exitStatus(victim) == SIGKILL, "node 1 did not crash after \(step.rawValue)")
                // Killed mid-way: the header (kept as it was left) opens with the old key or the new
                // one; the new key is the victim's own, so it is asked once the victim is back.
                let left = images.path("left-after-\(step.rawValue).img")
                try images.bytes(device).write(to: URL(fileURLWithPath: left))
                await rack.stop(victim)
                try await rack.start(victim)
                try await Self.waitVerified(rack, [0, 1, 2], epoch: next.epoch)
                let new = try await Self.key(rack, victim, epoch: next.epoch)
                #expect(try images.opens(left, old) || images.opens(left, new), "after \(step.rawValue)")
                #expect(try images.keyrackTokens(device).map(\.epoch) == [next.epoch.value], "after \(step.rawValue)")
                #expect(try images.keyslots(device).count == 2)
                #expect(try !images.opens(device, old))
                #expect(try images.cryptsetup.test(device, key: new) != nil)
                latest = next
            }
            let status = try #require(await rack.statuses([victim])[0])
            #expect(status.rekey.isEmpty)
            #expect(status.alarms.isEmpty)
        }
    }

    @Test("a node with a bound volume on a machine without cryptsetup stops at start, naming the package")
    func noCryptsetup() async throws {
        try await withRack(count: 1) { rack in
            let images = try LuksImages(in: rack.directory)
            _ = try Self.addVolumes(rack, images, [0])
            try rack.launch(0, environment: ["KEYRACK_TEST_CRYPTSETUP_PATH": rack.directory.path])
            let deadline = ContinuousClock.now + .seconds(30)
            while rack.exitStatus(0) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(rack.exitStatus(0) == 1)
            #expect(rack.logTail(0).contains("install the Debian package cryptsetup-bin"))
        }
    }
}
