import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import Testing
import TrustQuorum
import X509
import _CryptoExtras

@testable import NodeAgent

/// Two ledger directories in a fresh temporary folder.
final class LedgerFixture: @unchecked Sendable {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)")
    var directories: [URL] { [root.appendingPathComponent("m2a"), root.appendingPathComponent("m2b")] }
    let rootOfTrust: SoftwareRootOfTrust
    let share: Share
    let state: PersistentState

    init() throws {
        var random = SeededRandomSource(seed: 99)
        rootOfTrust = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        let shares = try Shamir.split(random.secretBytes(32), threshold: 2, shares: 3, using: &random)
        share = shares[1]
        var state = PersistentState.empty
        state.shares[1] = share
        self.state = state
    }

    func ledger(_ rootOfTrust: (any RootOfTrust)? = nil) throws -> Ledger {
        try Ledger(directories: directories, rootOfTrust: rootOfTrust ?? self.rootOfTrust)
    }

    func file(_ index: Int) -> URL { directories[index].appendingPathComponent("ledger") }

    deinit { try? FileManager.default.removeItem(at: root) }
}

@Suite("Durable ledger")
struct LedgerTests {
    @Test("write then load gives the state back; nothing on disk is an empty ledger")
    func roundTrip() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        #expect(try ledger.load().state == nil)
        try ledger.write(fixture.state, generation: 1)
        let loaded = try ledger.load()
        #expect(loaded.state == fixture.state)
        #expect(loaded.generation == 1)
        #expect(loaded.problems.isEmpty)
        let attributes = try FileManager.default.attributesOfItem(atPath: fixture.file(0).path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test("the higher valid generation wins")
    func generations() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(PersistentState.empty, generation: 1)
        let old = try Data(contentsOf: fixture.file(1))
        try ledger.write(fixture.state, generation: 2)
        // One copy is stale (a crash between the two writes).
        try old.write(to: fixture.file(1))
        let loaded = try ledger.load()
        #expect(loaded.generation == 2)
        #expect(loaded.state == fixture.state)
    }

    @Test(
        "a corrupt or truncated copy is reported and the other used",
        arguments: ["flip", "truncate", "garbage", "empty"])
    func damagedCopy(kind: String) throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 7)
        var bytes = try Data(contentsOf: fixture.file(0))
        switch kind {
        case "flip": bytes[bytes.count / 2] ^= 0x01
        case "truncate": bytes = bytes.prefix(bytes.count - 5)
        case "garbage": bytes = Data("not a ledger at all, not even close".utf8)
        default: bytes = Data()
        }
        try bytes.write(to: fixture.file(0))
        let loaded = try ledger.load()
        #expect(loaded.state == fixture.state)
        #expect(loaded.generation == 7)
        #expect(loaded.problems.count == 1)
        #expect(loaded.problems.first?.path == fixture.file(0).path)
    }

    @Test("a copy that is gone while the other exists is reported; one that cannot be read is reported too")
    func missingOrUnreadableCopy() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 5)
        try FileManager.default.removeItem(at: fixture.file(1))
        var loaded = try ledger.load()
        #expect(loaded.state == fixture.state)
        #expect(loaded.problems.map(\.path) == [fixture.file(1).path])
        #expect(loaded.problems.first?.reason.contains("missing while the other copy exists") == true)
        // Something that exists but cannot be read (here a directory where the file belongs).
        try FileManager.default.createDirectory(at: fixture.file(1), withIntermediateDirectories: false)
        loaded = try ledger.load()
        #expect(loaded.state == fixture.state)
        #expect(loaded.problems.map(\.path) == [fixture.file(1).path])
        #expect(loaded.problems.first?.reason.contains("cannot") == true)
    }

    @Test("a write that cannot complete in either directory is an error, not a silent loss")
    func failedWrite() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 1)
        // A non-empty directory where the file must be renamed to: the rename fails.
        try FileManager.default.removeItem(at: fixture.file(0))
        try FileManager.default.createDirectory(
            at: fixture.file(0).appendingPathComponent("blocker"), withIntermediateDirectories: true)
        let failed = #expect(throws: LedgerError.self) { try ledger.write(fixture.state, generation: 2) }
        #expect(failed?.code == .io)
        // No temporary file is left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.directories[0].path)
        #expect(leftovers == ["ledger"])
    }

    @Test("both copies unusable: an error, never an empty state")
    func bothDamaged() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 3)
        for index in 0..<2 { try Data("broken".utf8).write(to: fixture.file(index)) }
        #expect((#expect(throws: LedgerError.self) { try ledger.load() })?.code == .unusable)
    }

    @Test("the files alone reveal no share, and another node's root of trust cannot open them")
    func sealed() throws {
        let fixture = try LedgerFixture()
        try fixture.ledger().write(fixture.state, generation: 1)
        let bytes = [UInt8](try Data(contentsOf: fixture.file(0)))
        let share = fixture.share.y.unsafeCopiedBytes
        let hex = Array(share.hexString.utf8)
        #expect(!contains(bytes, share.prefix(16)))
        #expect(!contains(bytes, hex.prefix(32)))
        var random = SeededRandomSource(seed: 100)
        let other = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        let refused = #expect(throws: LedgerError.self) { try fixture.ledger(other).load() }
        #expect(refused?.code == .unusable)
        // Each copy's reason says why it is refused.
        #expect(refused?.reason.contains("another node's root of trust") == true)
    }

    @Test("a leftover temporary file from a crash mid-write is ignored")
    func crashLeftovers() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 4)
        try Data("half written".utf8).write(to: fixture.directories[0].appendingPathComponent("ledger.tmp-12345"))
        #expect(try ledger.load().generation == 4)
    }

    @Test("two distinct directories are required")
    func directories() throws {
        let fixture = try LedgerFixture()
        let same = #expect(throws: LedgerError.self) {
            try Ledger(directories: [fixture.directories[0], fixture.directories[0]], rootOfTrust: fixture.rootOfTrust)
        }
        #expect(same?.code == .directories)
        let one = #expect(throws: LedgerError.self) {
            try Ledger(directories: [fixture.directories[0]], rootOfTrust: fixture.rootOfTrust)
        }
        #expect(one?.code == .directories)
    }
}

@Suite("Software root of trust")
struct RootOfTrustTests {
    @Test(
        "the key file is created 0600, reopened to the same key, and signs verifiably",
        arguments: DeviceKeyType.allCases)
    func keyFile(type: DeviceKeyType) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rot-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect((#expect(throws: RootOfTrustError.self) { try SoftwareRootOfTrust(keyFile: path) })?.code == .missing)
        let first = try SoftwareRootOfTrust.create(keyFile: path, type: type)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let second = try SoftwareRootOfTrust(keyFile: path)
        #expect(first.publicKey == second.publicKey)
        let again = #expect(throws: RootOfTrustError.self) { try SoftwareRootOfTrust.create(keyFile: path, type: type) }
        #expect(again?.code == .exists)
        let signature = try first.sign([1, 2, 3])
        if type == .ed25519 {
            let key = try #require(Curve25519.Signing.PublicKey(second.publicKey))
            #expect(key.isValidSignature(signature, for: [1, 2, 3] as [UInt8]))
        } else {
            #expect(signature.count == 512)
        }
        // Sealed data opens after reopening; another purpose (another key)
        // or other authenticated data does not open it.
        let sealed = try first.seal([1, 2, 3], purpose: "a", authenticating: [9])
        #expect(try second.open(sealed, purpose: "a", authenticating: [9]) == SecretBytes([1, 2, 3]))
        let otherPurpose = #expect(throws: RootOfTrustError.self) {
            try second.open(sealed, purpose: "b", authenticating: [9])
        }
        #expect(otherPurpose?.code == .open)
        let otherData = #expect(throws: RootOfTrustError.self) {
            try second.open(sealed, purpose: "a", authenticating: [8])
        }
        #expect(otherData?.code == .open)
        #expect(try first.open(try first.seal([4], purpose: "b"), purpose: "b") == SecretBytes([4]))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let exposed = #expect(throws: RootOfTrustError.self) { try SoftwareRootOfTrust(keyFile: path) }
        #expect(exposed?.code == .permissions)
    }
}

extension RootOfTrustTests {
    @Test("sealing is fresh, and only the same root of trust opens it")
    func sealing() throws {
        var random = SeededRandomSource(seed: 7)
        let one = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        let other = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        let secret = Array("a share".utf8)
        let first = try one.seal(secret, purpose: "p")
        let second = try one.seal(secret, purpose: "p")
        #expect(first != second)
        #expect(!contains(first, secret))
        #expect(try one.open(second, purpose: "p") == SecretBytes(secret))
        #expect((#expect(throws: RootOfTrustError.self) { try other.open(first, purpose: "p") })?.code == .open)
        var flipped = first
        flipped[flipped.count - 1] ^= 1
        #expect((#expect(throws: RootOfTrustError.self) { try one.open(flipped, purpose: "p") })?.code == .open)
        let truncated = #expect(throws: RootOfTrustError.self) { try one.open(Array(first.prefix(20)), purpose: "p") }
        #expect(truncated?.code == .open)
    }

    @Test("every scheme the key offers signs verifiably; others are refused", arguments: DeviceKeyType.allCases)
    func schemes(type: DeviceKeyType) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rot-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let rootOfTrust = try SoftwareRootOfTrust.create(keyFile: path, type: type)
        let message = Array("TLS 1.3, server CertificateVerify".utf8)
        switch type {
        case .ed25519:
            #expect(rootOfTrust.signatureSchemes == [.ed25519])
            let key = try #require(Curve25519.Signing.PublicKey(rootOfTrust.publicKey))
            #expect(key.isValidSignature(try rootOfTrust.sign(message, scheme: .ed25519), for: message))
        case .rsa4096:
            let key = try #require(_RSA.Signing.PublicKey(rootOfTrust.publicKey))
            func verifies(_ scheme: DeviceSignatureScheme, _ digest: some Digest, _ padding: _RSA.Signing.Padding)
                throws -> Bool
            {
                let signature = _RSA.Signing.RSASignature(
                    rawRepresentation: try rootOfTrust.sign(message, scheme: scheme))
                return key.isValidSignature(signature, for: digest, padding: padding)
            }
            #expect(try verifies(.rsaPssRsaeSha256, SHA256.hash(data: message), .PSS))
            #expect(try verifies(.rsaPssRsaeSha384, SHA384.hash(data: message), .PSS))
            #expect(try verifies(.rsaPssRsaeSha512, SHA512.hash(data: message), .PSS))
            #expect(try verifies(.rsaPkcs1Sha256, SHA256.hash(data: message), .insecurePKCS1v1_5))
            #expect(!(try verifies(.rsaPssRsaeSha384, SHA256.hash(data: message), .PSS)))
        }
        for scheme in DeviceSignatureScheme.allCases where !rootOfTrust.signatureSchemes.contains(scheme) {
            let refused = #expect(throws: RootOfTrustError.self) { try rootOfTrust.sign(message, scheme: scheme) }
            #expect(refused?.code == .unsupported)
        }
    }
}

extension LedgerTests {
    @Test("a ledger written before sealing moved into the root of trust still opens")
    func formatUnchanged() throws {
        let fixture = try LedgerFixture()
        // The earlier writer: HKDF-SHA256 of the seed (salt keyrack-rot-v1,
        // info keyrack-ledger-v1) keyed ChaCha20-Poly1305 in the ledger.
        var random = SeededRandomSource(seed: 99)
        let seed = random.secretBytes(32)
        let key = seed.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: bytes), salt: Array("keyrack-rot-v1".utf8),
                info: Array("keyrack-ledger-v1".utf8), outputByteCount: 32)
        }
        let header = Array("KRLG".utf8) + [1, 0, 0, 0, 0, 0, 0, 0, 5]
        let box = try ChaChaPoly.seal(try JSONEncoder().encode(fixture.state), using: key, authenticating: header)
        for index in 0..<2 {
            try FileManager.default.createDirectory(at: fixture.directories[index], withIntermediateDirectories: true)
            try Data(header + Array(box.combined)).write(to: fixture.file(index))
        }
        let loaded = try fixture.ledger().load()
        #expect(loaded.state == fixture.state)
        #expect(loaded.generation == 5)
        // And what the ledger writes now, the earlier reader opens.
        try fixture.ledger().write(fixture.state, generation: 6)
        let written = [UInt8](try Data(contentsOf: fixture.file(0)))
        #expect(Array(written.prefix(13)) == Array("KRLG".utf8) + [1, 0, 0, 0, 0, 0, 0, 0, 6])
        let opened = try ChaChaPoly.open(
            try ChaChaPoly.SealedBox(combined: written[13...]), using: key, authenticating: written.prefix(13))
        #expect(try JSONDecoder().decode(PersistentState.self, from: opened) == fixture.state)
    }
}

func contains(_ haystack: [UInt8], _ needle: some Collection<UInt8>) -> Bool {
    let needle = Array(needle)
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
}

@Suite("Agent state beside the ledger, sealed by the root of trust")
struct AgentStateTests {
    static func sample(generation: UInt64, epoch: Epoch) -> AgentState {
        var state = AgentState()
        state.peers["kr:sn-2"] = "127.0.0.1:7002"
        state.disks["data0"] = epoch
        state.alarms = ["RackSecretDecryptionFailed(epoch: 3)"]
        state.generation = generation
        return state
    }

    @Test("written to both directories; the higher generation wins; a damaged copy is reported, not fatal")
    func roundTripAndDamage() throws {
        let fixture = try LedgerFixture()
        _ = try fixture.ledger()  // creates the directories
        let rot = fixture.rootOfTrust
        #expect(
            AgentState.load(from: fixture.directories, rootOfTrust: rot)
                == AgentState.Loaded(state: AgentState(), problems: []))
        var state = Self.sample(generation: 1, epoch: 3)
        try state.save(to: fixture.directories, rootOfTrust: rot)
        let stale = try Data(contentsOf: fixture.directories[1].appendingPathComponent(AgentState.fileName))
        #expect(!contains(Array(stale), Array("127.0.0.1:7002".utf8)))  // sealed, not in the clear
        state = Self.sample(generation: 2, epoch: 4)
        try state.save(to: fixture.directories, rootOfTrust: rot)
        // One copy is older (a crash between the two writes): the newer wins.
        try stale.write(to: fixture.directories[1].appendingPathComponent(AgentState.fileName))
        #expect(AgentState.load(from: fixture.directories, rootOfTrust: rot).state == state)
        // One copy damaged: reported, the other used.
        var tampered = try Data(contentsOf: fixture.directories[0].appendingPathComponent(AgentState.fileName))
        tampered[tampered.count - 1] ^= 1
        try tampered.write(to: fixture.directories[0].appendingPathComponent(AgentState.fileName))
        let loaded = AgentState.load(from: fixture.directories, rootOfTrust: rot)
        #expect(loaded.state.disks["data0"] == Epoch(3))
        #expect(loaded.problems.count == 1 && loaded.problems[0].contains("does not open"))
    }

    @Test("a copy sealed by another root of trust, or a plain file in its place, does not load")
    func otherRootOfTrust() throws {
        let fixture = try LedgerFixture()
        _ = try fixture.ledger()
        var random = SeededRandomSource(seed: 77)
        let other = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        try Self.sample(generation: 5, epoch: 2).save(to: fixture.directories, rootOfTrust: other)
        let loaded = AgentState.load(from: fixture.directories, rootOfTrust: fixture.rootOfTrust)
        #expect(loaded.state == AgentState())
        #expect(loaded.problems.count == 2)
        var forged = Self.sample(generation: UInt64.max, epoch: 9)
        forged.peers["evil:sn-1"] = "10.0.0.1:1"
        let json = try JSONEncoder().encode(forged)
        for directory in fixture.directories {
            try json.write(to: directory.appendingPathComponent(AgentState.fileName))
        }
        let plain = AgentState.load(from: fixture.directories, rootOfTrust: fixture.rootOfTrust)
        #expect(plain.state == AgentState())
        #expect(plain.problems.allSatisfy { $0.contains("not a sealed agent state file") })
    }

    @Test("an unsealed agent.json of an earlier release is read once, reported, and replaced by a sealed copy")
    func legacyMigration() throws {
        let fixture = try LedgerFixture()
        _ = try fixture.ledger()
        let rot = fixture.rootOfTrust
        let old = Self.sample(generation: 7, epoch: 2)
        let json = try JSONEncoder().encode(old)
        for directory in fixture.directories {
            try json.write(to: directory.appendingPathComponent(AgentState.legacyFileName))
        }
        let loaded = AgentState.load(from: fixture.directories, rootOfTrust: rot)
        #expect(loaded.state == old)
        #expect(
            loaded.problems == [
                "the agent state is an unsealed agent.json from an earlier release; it is sealed at the next write"
            ])
        var next = loaded.state
        next.generation += 1
        try next.save(to: fixture.directories, rootOfTrust: rot)
        for directory in fixture.directories {
            #expect(
                !FileManager.default.fileExists(
                    atPath: directory.appendingPathComponent(AgentState.legacyFileName).path))
        }
        #expect(
            AgentState.load(from: fixture.directories, rootOfTrust: rot) == AgentState.Loaded(state: next, problems: [])
        )
        // Once sealed copies exist, a planted agent.json is ignored.
        try json.write(to: fixture.directories[0].appendingPathComponent(AgentState.legacyFileName))
        #expect(AgentState.load(from: fixture.directories, rootOfTrust: rot).state == next)
    }
}

@Suite("Ledger anti-rollback marker (review L3)")
struct LedgerMarkerTests {
    /// Both copies as they are now.
    static func snapshot(_ fixture: LedgerFixture) throws -> [Data] {
        try (0..<2).map { try Data(contentsOf: fixture.file($0)) }
    }

    @Test("an older ledger restored over the current one is refused, and nothing is changed")
    func rollbackRefused() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(PersistentState.empty, generation: 1)
        let old = try Self.snapshot(fixture)
        try ledger.write(fixture.state, generation: 2)
        for index in 0..<2 { try old[index].write(to: fixture.file(index)) }
        let refused = #expect(throws: LedgerError.self) { try ledger.load() }
        #expect(refused?.code == .rollback)
        #expect(refused?.reason.contains("generation 1") == true)
        #expect(refused?.reason.contains("recorded generation 2") == true)
        #expect(try Self.snapshot(fixture) == old)
        #expect(try fixture.rootOfTrust.ledgerMarker() == 2)
        // One stale copy beside a current one is a crash between two writes, not a rollback.
        try ledger.write(fixture.state, generation: 3)
        try old[1].write(to: fixture.file(1))
        #expect(try ledger.load().generation == 3)
    }

    @Test("an initialised node whose ledger is gone does not start as a new node unless reinitialised")
    func missingRefused() throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 3)
        for index in 0..<2 { try FileManager.default.removeItem(at: fixture.file(index)) }
        let refused = #expect(throws: LedgerError.self) { try ledger.load() }
        #expect(refused?.code == .missing)
        #expect(refused?.reason.contains("--reinitialise") == true)
        // Reinitialised: a new node, its generations going on above the marker.
        let fresh = try ledger.load(reinitialise: true)
        #expect(fresh.state == nil)
        #expect(fresh.generation == 3)
        #expect(fresh.problems.map(\.reason) == ["the ledger was reinitialised (--reinitialise)"])
        try ledger.write(PersistentState.empty, generation: fresh.generation + 1)
        let loaded = try ledger.load()
        #expect(loaded.generation == 4)
        #expect(loaded.state == PersistentState.empty)
        #expect(try fixture.rootOfTrust.ledgerMarker() == 4)
    }

    @Test("--reinitialise while a ledger copy exists is refused and deletes nothing", arguments: [1, 2])
    func reinitialiseWithCopies(copies: Int) throws {
        let fixture = try LedgerFixture()
        let ledger = try fixture.ledger()
        try ledger.write(fixture.state, generation: 2)
        if copies == 1 { try FileManager.default.removeItem(at: fixture.file(0)) }
        let refused = #expect(throws: LedgerError.self) { try ledger.load(reinitialise: true) }
        #expect(refused?.code == .reinitialise)
        #expect(FileManager.default.fileExists(atPath: fixture.file(1).path))
        #expect(try ledger.load().state == fixture.state)
    }

    @Test("a ledger written before markers existed loads and sets the marker; a brand-new node has none")
    func legacyLedgerSetsMarker() throws {
        let fixture = try LedgerFixture()
        try fixture.ledger().write(fixture.state, generation: 9)
        // The same device key, with no marker recorded yet (an earlier release).
        var random = SeededRandomSource(seed: 99)
        let earlier = try SoftwareRootOfTrust(seed: random.secretBytes(32))
        #expect(try earlier.ledgerMarker() == nil)
        #expect(try fixture.ledger(earlier).load().generation == 9)
        #expect(try earlier.ledgerMarker() == 9)
        let blank = try LedgerFixture()
        #expect(try blank.ledger().load().state == nil)
        #expect(try blank.rootOfTrust.ledgerMarker() == nil)
    }

    @Test("the marker file: written atomically (0600) beside the key, never lowered, authenticated")
    func markerFile() throws {
        let fixture = try LedgerFixture()
        try FileManager.default.createDirectory(at: fixture.root, withIntermediateDirectories: true)
        let keyFile = fixture.root.appendingPathComponent("device.key").path
        let rootOfTrust = try SoftwareRootOfTrust.create(keyFile: keyFile)
        let markerPath = LedgerMarkerFile.path(forKeyFile: keyFile)
        #expect(try rootOfTrust.ledgerMarker() == nil)
        try fixture.ledger(rootOfTrust).write(fixture.state, generation: 5)
        let attributes = try FileManager.default.attributesOfItem(atPath: markerPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // The marker survives the process: the key file opened again reads it.
        let reopened = try SoftwareRootOfTrust(keyFile: keyFile)
        #expect(try reopened.ledgerMarker() == 5)
        let lowered = #expect(throws: RootOfTrustError.self) { try reopened.advanceLedgerMarker(to: 4) }
        #expect(lowered?.code == .marker)
        #expect(try reopened.ledgerMarker() == 5)
        // Its generation is authenticated: raising it by hand makes it unusable, not higher.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: markerPath)))
        let genuine = bytes
        bytes[12] ^= 0x80
        try Data(bytes).write(to: URL(fileURLWithPath: markerPath))
        let forged = #expect(throws: RootOfTrustError.self) { try reopened.ledgerMarker() }
        #expect(forged?.code == .marker)
        let refused = #expect(throws: LedgerError.self) { try fixture.ledger(reopened).load() }
        #expect(refused?.code == .marker)
        // Another node's marker, copied over, does not authenticate either.
        let otherKey = fixture.root.appendingPathComponent("other.key").path
        let other = try SoftwareRootOfTrust.create(keyFile: otherKey)
        try other.advanceLedgerMarker(to: 1)
        try Data(contentsOf: URL(fileURLWithPath: LedgerMarkerFile.path(forKeyFile: otherKey)))
            .write(to: URL(fileURLWithPath: markerPath))
        #expect((#expect(throws: RootOfTrustError.self) { try reopened.ledgerMarker() })?.code == .marker)
        // Truncated: the same.
        try Data(genuine.prefix(20)).write(to: URL(fileURLWithPath: markerPath))
        #expect((#expect(throws: RootOfTrustError.self) { try reopened.ledgerMarker() })?.code == .marker)
        try Data(genuine).write(to: URL(fileURLWithPath: markerPath))
        #expect(try fixture.ledger(reopened).load().generation == 5)
    }

    @Test("a marker that cannot be raised fails the write, and the next load still opens what was written")
    func markerWriteFailure() throws {
        let fixture = try LedgerFixture()
        try FileManager.default.createDirectory(at: fixture.root, withIntermediateDirectories: true)
        let markerPath = fixture.root.appendingPathComponent("marker").path
        var random = SeededRandomSource(seed: 5)
        let rootOfTrust = try SoftwareRootOfTrust(seed: random.secretBytes(32), markerFile: markerPath)
        let ledger = try fixture.ledger(rootOfTrust)
        try ledger.write(fixture.state, generation: 1)
        // A non-empty directory where the marker must be renamed to.
        try FileManager.default.removeItem(atPath: markerPath)
        try FileManager.default.createDirectory(
            atPath: markerPath + "/blocker", withIntermediateDirectories: true)
        let failed = #expect(throws: LedgerError.self) { try ledger.write(fixture.state, generation: 2) }
        #expect(failed?.code == .marker)
        #expect(failed?.reason.contains("the ledger is written") == true)
        let unreadable = #expect(throws: LedgerError.self) { try ledger.load() }
        #expect(unreadable?.code == .marker)
        try FileManager.default.removeItem(atPath: markerPath)
        #expect(try ledger.load().generation == 2)
    }
}
