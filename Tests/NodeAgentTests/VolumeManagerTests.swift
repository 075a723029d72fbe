import Foundation
import KeyrackCore
import KeyrackTestSupport
import Logging
import SecretSharing
import Testing
import TrustQuorum

@testable import NodeAgent

/// The volume manager against real `cryptsetup` on file-backed LUKS2
/// images: binding, verifying at unlock, re-keying at a commit (stopped
/// after every step and resumed), and refusing what it must not touch.
@Suite("LUKS2 volumes with real cryptsetup")
struct VolumeManagerTests {
    static let logger = {
        var logger = Logger(label: "test.volumes")
        logger.logLevel = .critical
        return logger
    }()

    static func manager(
        _ volumes: [LuksVolume], _ host: FakeVolumeHost, options: VolumeOptions = VolumeOptions()
    ) async throws -> VolumeManager {
        let manager = try VolumeManager(
            volumes: volumes, rack: host.rack, plans: await host.plans, options: options, logger: logger)
        await manager.attach(host)
        return manager
    }

    static func status(_ manager: VolumeManager, _ disk: String) throws -> VolumeStatus {
        try #require(manager.statuses.first { $0.disk == disk })
    }

    @Test("bind enrolls the latest epoch's key beside the passphrase, with a keyrack token; unlock verifies it")
    func bindAndVerify() async throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let host = FakeVolumeHost(latest: 3)
        let volume = LuksVolume(disk: "data0", device: image, open: false)
        let manager = try await Self.manager([volume], host)
        #expect(try Self.status(manager, "data0").state == .locked)
        await manager.reconcile(at: 3)
        #expect(try Self.status(manager, "data0").state == .unbound)

        // A wrong existing key is refused and changes nothing.
        let before = try fixture.bytes(image)
        let wrong = await #expect(throws: VolumeError.self) {
            try await manager.bind(disk: "data0", existingKey: SecretBytes(Array("wrong".utf8)))
        }
        #expect(wrong?.code == .key)
        #expect(try fixture.bytes(image) == before)

        let bound = try await manager.bind(disk: "data0", existingKey: LuksImages.passphrase)
        #expect(bound.state == .verified)
        #expect(bound.epoch == 3)
        #expect(bound.keyslot == 1)
        #expect(try fixture.keyslots(image) == [0, 1])
        #expect(try fixture.keyrackTokens(image) == [host.token(0, epoch: 3, keyslot: 1)])
        let token = try #require(try fixture.dump(image)["tokens"] as? [String: [String: Any]])["0"]
        #expect(token?["rack_id"] as? String == host.rack.description)
        #expect(token?["disk_id"] as? String == "data0")
        #expect(try fixture.cryptsetup.test(image, key: host.key("data0", 3)) == 1)
        #expect(try fixture.cryptsetup.test(image, key: LuksImages.passphrase) == 0)
        #expect(await host.keyed["data0"] == 3)

        // Binding again is refused; a restarted node verifies the volume at unlock.
        let again = await #expect(throws: VolumeError.self) {
            try await manager.bind(disk: "data0", existingKey: LuksImages.passphrase)
        }
        #expect(again?.code == .bound)
        let restarted = try await Self.manager([volume], host)
        await restarted.reconcile(at: 3)
        #expect(
            try Self.status(restarted, "data0")
                == VolumeStatus(
                    disk: "data0", device: image, state: .verified, epoch: 3, keyScheme: .platformBound, keyslot: 1))
    }

    @Test(
        "a volume an earlier release bound (disk-only key, keyrack_version 1) is re-keyed onto this release's key at the same epoch, also when stopped after any step",
        arguments: [RekeyPlan.Step?.none] + RekeyPlan.Step.allCases.map { $0 })
    func earlierReleaseVolumeMigrates(stopAfter: RekeyPlan.Step?) async throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let host = FakeVolumeHost(latest: 3)
        // As an earlier release bound it: epoch 3's disk-only key in keyslot 1, a version-1 token.
        let legacy = host.key("data0", 3, .diskOnly)
        try fixture.cryptsetup.addKey(image, existing: LuksImages.passphrase, new: legacy, keyslot: 1)
        try fixture.cryptsetup.importToken(
            image, id: 0,
            token: KeyrackToken(rackId: host.rack, diskId: "data0", epoch: 3, keyslot: 1, scheme: .diskOnly))
        #expect(try fixture.keyrackTokens(image) == [host.token(0, epoch: 3, keyslot: 1, scheme: .diskOnly)])
        let volume = LuksVolume(disk: "data0", device: image, open: false)
        var manager = try await Self.manager([volume], host, options: VolumeOptions(afterStep: { $0 == stopAfter }))
        await manager.reconcile(at: 3)
        if let stopAfter {
            // Stopped there: one of the two keys opens it, and a restarted manager finishes.
            #expect(try fixture.opens(image, legacy) || fixture.opens(image, host.key("data0", 3)), "\(stopAfter)")
            #expect(try fixture.opens(image, legacy) == (stopAfter < .removeOldKeyslot))
            manager = try await Self.manager([volume], host)
            await manager.reconcile(at: 3)
        }
        let status = try Self.status(manager, "data0")
        #expect(status.state == .verified)
        #expect(status.epoch == 3)
        #expect(status.keyScheme == .platformBound)
        #expect(status.problem == nil)
        #expect(try fixture.keyslots(image) == [0, 2])
        #expect(try fixture.keyrackTokens(image) == [host.token(1, epoch: 3, keyslot: 2)])
        #expect(try fixture.cryptsetup.test(image, key: host.key("data0", 3)) == 2)
        #expect(try !fixture.opens(image, legacy))
        #expect(try fixture.opens(image, LuksImages.passphrase))
        #expect(await host.plans.isEmpty)
        #expect(await host.keyed["data0"] == 3)
        #expect(await host.keyedSchemes["data0"] == .platformBound)
    }

    @Test("a commit re-keys the volume: the new epoch's key opens it, the old one no longer does, the passphrase stays")
    func rekeyAtCommit() async throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let host = FakeVolumeHost(latest: 1)
        let manager = try await Self.manager([LuksVolume(disk: "data0", device: image, open: false)], host)
        _ = try await manager.bind(disk: "data0", existingKey: LuksImages.passphrase)
        // Two commits while the node was busy: it goes straight to the latest.
        await host.commit(3)
        await manager.reconcile(at: 3)
        let status = try Self.status(manager, "data0")
        #expect(status.state == .verified)
        #expect(status.epoch == 3)
        #expect(status.problem == nil)
        #expect(try fixture.keyslots(image) == [0, 2])
        #expect(try fixture.keyrackTokens(image) == [host.token(1, epoch: 3, keyslot: 2)])
        #expect(try fixture.cryptsetup.test(image, key: host.key("data0", 3)) == 2)
        #expect(try !fixture.opens(image, host.key("data0", 1)))
        #expect(try fixture.opens(image, LuksImages.passphrase))
        #expect(await host.plans.isEmpty)
        #expect(await host.keyed["data0"] == 3)
    }

    @Test(
        "stopped right after each re-key step, a restarted manager finishes; the header opens all along",
        arguments: RekeyPlan.Step.allCases)
    func crashAfterEachStep(step: RekeyPlan.Step) async throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let host = FakeVolumeHost(latest: 1)
        let volume = LuksVolume(disk: "data0", device: image, open: false)
        let first = try await Self.manager(
            [volume], host, options: VolumeOptions(afterStep: { $0 == step }))
        _ = try await first.bind(disk: "data0", existingKey: LuksImages.passphrase)
        await host.commit(2)
        await first.reconcile(at: 2)
        // Stopped: the plan is in the agent state (except after the record), and a keyrack key opens the header.
        let plan = await host.plans["data0"]
        #expect((plan == nil) == (step == .record))
        #expect(plan?.step == (step == .record ? nil : step))
        let old = try fixture.opens(image, host.key("data0", 1))
        let new = try fixture.opens(image, host.key("data0", 2))
        #expect(old || new)
        #expect(old == (step < .removeOldKeyslot))
        #expect(new)

        let second = try await Self.manager([volume], host)
        await second.reconcile(at: 2)
        #expect(try Self.status(second, "data0").state == .verified)
        #expect(try Self.status(second, "data0").epoch == 2)
        #expect(try fixture.keyslots(image) == [0, 2])
        #expect(try fixture.keyrackTokens(image) == [host.token(1, epoch: 2, keyslot: 2)])
        #expect(try !fixture.opens(image, host.key("data0", 1)))
        #expect(await host.plans.isEmpty)
        #expect(await host.keyed["data0"] == 2)
    }

    @Test("a re-key step whose progress cannot be written is not taken")
    func unrecordedStepNotTaken() async throws {
        let fixture = try LuksImages()
        let image = try fixture.image("data0.img")
        let host = FakeVolumeHost(latest: 1)
        let manager = try await Self.manager([LuksVolume(disk: "data0", device: image, open: false)], host)
        _ = try await manager.bind(disk: "data0", existingKey: LuksImages.passphrase)
        let before = try fixture.bytes(image)
        await host.refuseWrites(true)
        await host.commit(2)
        await manager.reconcile(at: 2)
        let status = try Self.status(manager, "data0")
        #expect(status.state == .failed)
        #expect(status.problem?.code.rawValue == VolumeError.Code.stateWrite.rawValue)
        #expect(try fixture.bytes(image) == before)
        // Once writes work again, the next unlock completes it.
        await host.refuseWrites(false)
        await manager.reconcile(at: 2)
        #expect(try Self.status(manager, "data0").epoch == 2)
    }

    @Test("a damaged, foreign, LUKS1 or plain device is refused with a clear error and left byte for byte as it was")
    func refusedHeadersUntouched() async throws {
        let fixture = try LuksImages()
        let host = FakeVolumeHost(latest: 2)
        // A damaged primary header (libcryptsetup would repair it from the secondary).
        let damaged = try fixture.image("damaged.img")
        let handle = try #require(FileHandle(forWritingAtPath: damaged))
        try handle.seek(toOffset: 5000)
        handle.write(Data("XXXXXXXX".utf8))
        try handle.close()
        // Bound to another rack (a token written by another rack's node).
        let foreign = try fixture.image("foreign.img")
        let other = FakeVolumeHost(rack: RackId(bytes: [UInt8](repeating: 7, count: 16))!, latest: 2)
        let otherManager = try await Self.manager([LuksVolume(disk: "data1", device: foreign, open: false)], other)
        _ = try await otherManager.bind(disk: "data1", existingKey: LuksImages.passphrase)
        // Bound as another disk of this rack.
        let swapped = try fixture.image("swapped.img")
        let swapper = try await Self.manager([LuksVolume(disk: "data9", device: swapped, open: false)], host)
        _ = try await swapper.bind(disk: "data9", existingKey: LuksImages.passphrase)
        let luks1 = try fixture.blank("luks1.img")
        try fixture.cryptsetup.run(
            [
                "luksFormat", "--type", "luks1", "--batch-mode", "--pbkdf-force-iterations", "1000", "--key-file=-",
                luks1,
            ],
            stdin: LuksImages.passphrase)
        let plain = try fixture.blank("plain.img")

        let cases: [(String, String, VolumeError.Code, String)] = [
            ("data0", damaged, .header, "is damaged"), ("data1", foreign, .foreign, "another rack"),
            ("data2", swapped, .foreign, "bound as disk 'data9'"), ("data3", luks1, .header, "LUKS1"),
            ("data4", plain, .header, "no LUKS2 header"),
        ]
        let volumes = cases.map { LuksVolume(disk: $0.0, device: $0.1, open: false) }
        let before = try cases.map { try fixture.bytes($0.1) }
        let manager = try await Self.manager(volumes, host)
        await manager.reconcile(at: 2)
        for (disk, _, code, words) in cases {
            let status = try Self.status(manager, disk)
            #expect(status.state == .failed, "\(disk)")
            #expect(status.problem?.code.rawValue == code.rawValue, "\(disk)")
            #expect(status.problem?.reason.contains(words) == true, "\(disk): \(status.problem?.reason ?? "")")
        }
        // Binding them is refused too, and so is formatting those that hold a header.
        for (disk, device, _, _) in cases {
            await #expect(throws: VolumeError.self) {
                try await manager.bind(disk: disk, existingKey: LuksImages.passphrase)
            }
            if device != plain {
                let refused = await #expect(throws: VolumeError.self) { try await manager.format(disk: disk) }
                #expect(refused?.code == .notEmpty)
            }
        }
        #expect(try cases.map { try fixture.bytes($0.1) } == before)
    }

    @Test("a missing device is reported and the other volumes still verify")
    func missingDevice() async throws {
        let fixture = try LuksImages()
        let host = FakeVolumeHost(latest: 1)
        let present = try fixture.image("data1.img")
        let volumes = [
            LuksVolume(disk: "data0", device: fixture.path("gone.img"), open: false),
            LuksVolume(disk: "data1", device: present, open: false),
        ]
        let manager = try await Self.manager(volumes, host)
        _ = try await manager.bind(disk: "data1", existingKey: LuksImages.passphrase)
        await manager.reconcile(at: 1)
        #expect(try Self.status(manager, "data0").state == .failed)
        #expect(try Self.status(manager, "data0").problem?.code.rawValue == VolumeError.Code.deviceMissing.rawValue)
        #expect(try Self.status(manager, "data1").state == .verified)
    }

    @Test("luks-format makes a volume keyed by the rack alone; a device that is not empty is refused untouched")
    func format() async throws {
        let fixture = try LuksImages()
        let host = FakeVolumeHost(latest: 4)
        let empty = try fixture.blank("empty.img")
        let used = try fixture.blank("used.img")
        let handle = try #require(FileHandle(forWritingAtPath: used))
        try handle.seek(toOffset: 4096)
        handle.write(Data("ext4 or whatever".utf8))
        try handle.close()
        let manager = try await Self.manager(
            [
                LuksVolume(disk: "data0", device: empty, open: false),
                LuksVolume(disk: "data1", device: used, open: false),
            ],
            host)
        let formatted = try await manager.format(disk: "data0")
        #expect(formatted.state == .verified)
        #expect(formatted.epoch == 4)
        #expect(try fixture.keyslots(empty) == [0])
        #expect(try fixture.keyrackTokens(empty) == [host.token(0, epoch: 4, keyslot: 0)])
        #expect(try fixture.cryptsetup.test(empty, key: host.key("data0", 4)) == 0)
        let before = try fixture.bytes(used)
        let refused = await #expect(throws: VolumeError.self) { try await manager.format(disk: "data1") }
        #expect(refused?.code == .notEmpty)
        #expect(try fixture.bytes(used) == before)
        let again = await #expect(throws: VolumeError.self) { try await manager.format(disk: "data0") }
        #expect(again?.code == .notEmpty)
    }

    @Test("no cryptsetup: volumes in the configuration fail at start, naming the package; none is fine")
    func missingCryptsetup() throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("no-cryptsetup-\(UUID().uuidString)")
        let error = #expect(throws: VolumeError.self) {
            try VolumeManager(
                volumes: [LuksVolume(disk: "data0", device: "/dev/null", open: false)],
                rack: RackId(bytes: Array(0..<16))!,
                plans: [:], options: VolumeOptions(cryptsetupSearchPath: [empty.path]), logger: Self.logger)
        }
        #expect(error?.code == .cryptsetupMissing)
        #expect(error?.reason.contains("apt-get install cryptsetup-bin") == true)
        let none = try VolumeManager(
            volumes: [], rack: RackId(bytes: Array(0..<16))!, plans: [:],
            options: VolumeOptions(cryptsetupSearchPath: [empty.path]), logger: Self.logger)
        #expect(none.statuses.isEmpty)
    }

    @Test("keys reach cryptsetup through pipes: a key is never in a child's arguments or environment")
    func keysThroughPipes() throws {
        // A child that prints its arguments, its environment, then what its standard input and descriptor 3 hold.
        let key = SecretBytes(Array("s3cr3t-key-bytes".utf8))
        let finished = try ChildProcess.run(
            "/bin/sh", ["-c", "echo \"$@\"; env; echo; cat; echo; cat /dev/fd/3", "sh", "arg"], stdin: key,
            extra: [SecretBytes(Array("second".utf8))], timeout: .seconds(10))
        #expect(finished.status == 0)
        let lines = String(decoding: finished.output, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines.first == "arg")
        #expect(lines.suffix(2) == ["s3cr3t-key-bytes", "second"])
        #expect(lines.filter { $0.contains("s3cr3t") } == ["s3cr3t-key-bytes"])
        // Nothing of this process leaks into the child: it has stdin, stdout, stderr (and ls's directory handle).
        let listing = try ChildProcess.run("/bin/ls", ["/proc/self/fd"], timeout: .seconds(10))
        let descriptors = Set(
            String(decoding: listing.output, as: UTF8.self).split(separator: "\n").compactMap { Int($0) })
        #expect(descriptors == [0, 1, 2, 3])
        // A child past its deadline is killed.
        let slow = try ChildProcess.run("/bin/sleep", ["30"], timeout: .milliseconds(200))
        #expect(slow.timedOut)
    }
}
