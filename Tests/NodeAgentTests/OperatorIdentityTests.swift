import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import SwiftASN1
import Testing
import TrustQuorum
import X509

@testable import NodeAgent

/// The operator identity (`keyrack operator init`), its journal, and the
/// verifier nodes pin.
@Suite("Operator identity: certificate with the operator role, journal, pinned verifier")
struct OperatorIdentityTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("operator-\(UUID().uuidString)")

    static let rack = RackId(bytes: Array(0..<16))!

    static func configuration(epoch: Epoch, threshold: Int = 2) throws -> Configuration {
        let members = (1...3).map { PlatformId(part: "kr", serial: "sn-\($0)") }
        return try Configuration(
            rackId: rack, epoch: epoch, coordinator: members[0],
            members: Dictionary(
                uniqueKeysWithValues: members.map { ($0, ShareDigest(bytes: Array(repeating: 3, count: 32))!) }),
            threshold: threshold, encryptedRackSecrets: nil)
    }

    func make() throws -> (ManufacturingCA, OperatorIdentity, OperatorCertificateVerifier) {
        let ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let identity = try OperatorIdentity.create(
            in: directory.appendingPathComponent("operator"), ca: ca, name: "alice")
        let verifier = try OperatorCertificateVerifier(
            bundle: directory.appendingPathComponent("operator/operator-ca.pem").path)
        return (ca, identity, verifier)
    }

    @Test("what the operator signs verifies under its CA; another statement, key or CA does not")
    func signAndVerify() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (_, identity, verifier) = try make()
        let config = try Self.configuration(epoch: 2)
        let signed = SignedConfiguration(config, signature: try identity.sign(.commit(config)))
        #expect(signed.verifies(under: verifier))
        #expect(verifier.verifies(signed.signature, over: signed.configuration.fingerprint) == false)
        let other = SignedConfiguration(try Self.configuration(epoch: 3), signature: signed.signature)
        #expect(!other.verifies(under: verifier))
        // An operator of another CA is not trusted.
        let stranger = FileManager.default.temporaryDirectory.appendingPathComponent("operator-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: stranger) }
        let strangeCA = try ManufacturingCA.create(in: stranger.appendingPathComponent("ca"))
        let strangeOperator = try OperatorIdentity.create(
            in: stranger.appendingPathComponent("operator"), ca: strangeCA, name: "mallory")
        let forged = SignedConfiguration(config, signature: try strangeOperator.sign(.commit(config)))
        #expect(!forged.verifies(under: verifier))
        #expect(!identity.description.contains("key:") && identity.description.contains("redacted"))
    }

    @Test("a device certificate cannot sign for the operator, and an operator certificate is not a device")
    func rolesAreSeparate() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (ca, identity, verifier) = try make()
        let (rootOfTrust, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("device"), platform: PlatformId(part: "kr", serial: "sn-9"),
            keyType: .ed25519)
        let device = try ca.sign(csr)
        let config = try Self.configuration(epoch: 2)
        let statement = Decision.commit(config).statement
        let signature = try rootOfTrust.sign(statement, scheme: .ed25519)
        var serializer = DER.Serializer()
        try serializer.serialize(device)
        let byDevice = try #require(OperatorSignature(credential: serializer.serializedBytes, signature: signature))
        #expect(!verifier.verifies(byDevice, over: statement))
        // The operator certificate fails the device policy (no TLS use, operator role).
        await #expect(throws: IdentityFileError.self) {
            _ = try await DeviceIdentity.verify(identity.certificate, intermediates: [ca.intermediate], root: ca.root)
        }
    }

    @Test("a device certificate that carries the operator role is refused as a peer")
    func deviceWithOperatorRole() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (ca, _, _) = try make()
        let key = Curve25519.Signing.PrivateKey()
        let hybrid = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(3600),
            issuer: ca.intermediate.subject,
            subject: try PlatformIdentity.subject(for: PlatformId(part: "kr", serial: "sn-7")),
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth, OperatorRole.usage])
            },
            issuerPrivateKey: ca.intermediateKey)
        let error = await #expect(throws: IdentityFileError.self) {
            _ = try await DeviceIdentity.verify(hybrid, intermediates: [ca.intermediate], root: ca.root)
        }
        #expect(error?.reason.contains("operator role") == true)
    }

    @Test("an expired operator certificate does not verify")
    func expired() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (ca, identity, _) = try make()
        let config = try Self.configuration(epoch: 2)
        let signed = SignedConfiguration(config, signature: try identity.sign(.commit(config)))
        let later = try OperatorCertificateVerifier(
            intermediate: ca.intermediate, root: ca.root, clock: { Date().addingTimeInterval(6 * 365 * 86400) })
        #expect(!signed.verifies(under: later))
        let now = try OperatorCertificateVerifier(intermediate: ca.intermediate, root: ca.root)
        #expect(signed.verifies(under: now))
    }

    @Test("the journal: the same decision signs again, a different one for the same epoch never; it survives reopening")
    func journal() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (_, identity, _) = try make()
        let first = try Self.configuration(epoch: 5)
        let second = try Self.configuration(epoch: 5, threshold: 3)
        let signature = try identity.sign(.commit(first))
        #expect(try identity.sign(.commit(first)) == signature)  // Ed25519 is deterministic
        let conflict = #expect(throws: SigningError.self) { try identity.sign(.commit(second)) }
        #expect(conflict?.code == .conflicting)
        #expect(identity.highestSignedEpoch == 5)
        let reopened = try OperatorIdentity(directory: directory.appendingPathComponent("operator"))
        #expect(throws: SigningError.self) { try reopened.sign(.commit(second)) }
        #expect(try reopened.sign(.commit(first)) == signature)
        #expect(reopened.highestSignedEpoch == 5)
        // A ticket and a commit of one epoch are different kinds: both are signed.
        let ticket = ReconfigureTicket(
            ReconfigureRequest(
                rackId: Self.rack, epoch: 5, lastCommittedEpoch: 4, members: Set(first.members.keys), threshold: 2),
            coordinator: first.coordinator)
        _ = try reopened.sign(.ticket(ticket))
    }

    @Test("a journal cut short by a crash loses only the unfinished line; a corrupt one refuses to sign")
    func journalDamage() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (_, identity, _) = try make()
        let operatorDirectory = directory.appendingPathComponent("operator")
        let journal = operatorDirectory.appendingPathComponent("journal")
        _ = try identity.sign(.commit(try Self.configuration(epoch: 5)))
        let handle = try FileHandle(forWritingTo: journal)
        handle.seekToEndOfFile()
        handle.write(Data(#"{"kind":"commit","epo"#.utf8))
        try handle.close()
        let recovered = try OperatorIdentity(directory: operatorDirectory)
        #expect(recovered.highestSignedEpoch == 5)
        _ = try recovered.sign(.commit(try Self.configuration(epoch: 6)))
        let lines = try String(contentsOf: journal, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        try Data("not json\n".utf8).write(to: journal)
        let error = #expect(throws: IdentityFileError.self) { try OperatorIdentity(directory: operatorDirectory) }
        #expect(error?.code == .format)
    }

    @Test("a journal that cannot be written: nothing is signed (TQ-SIGN-UNAVAILABLE), and signing resumes once it can")
    func journalUnwritable() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (_, identity, _) = try make()
        let journal = directory.appendingPathComponent("operator").appendingPathComponent("journal")
        _ = try identity.sign(.commit(try Self.configuration(epoch: 5)))
        // A directory where the journal file must be appended to (root ignores file modes).
        try FileManager.default.removeItem(at: journal)
        try FileManager.default.createDirectory(at: journal, withIntermediateDirectories: false)
        let next = try Self.configuration(epoch: 6)
        let refused = #expect(throws: SigningError.self) { try identity.sign(.commit(next)) }
        #expect(refused?.code == .unavailable)
        #expect(refused?.reason.contains("cannot open the journal") == true)
        #expect(identity.highestSignedEpoch == 5)
        try FileManager.default.removeItem(at: journal)
        _ = try identity.sign(.commit(next))
        #expect(identity.highestSignedEpoch == 6)
        #expect(try String(contentsOf: journal, encoding: .utf8).split(separator: "\n").count == 1)
    }

    @Test("operator init refuses to overwrite, and a bundle that is not intermediate then root is refused")
    func refusals() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (ca, _, _) = try make()
        #expect(throws: IdentityFileError.self) {
            try OperatorIdentity.create(in: directory.appendingPathComponent("operator"), ca: ca, name: "again")
        }
        #expect(throws: IdentityFileError.self) {
            try OperatorIdentity.create(in: directory.appendingPathComponent("colon"), ca: ca, name: "kr:sn-1")
        }
        #expect(throws: IdentityFileError.self) {
            try OperatorCertificateVerifier(intermediate: ca.root, root: ca.intermediate)
        }
        let one = directory.appendingPathComponent("one.pem")
        try ca.root.serializeAsPEM().pemString.write(to: one, atomically: true, encoding: .utf8)
        #expect(throws: IdentityFileError.self) { try OperatorCertificateVerifier(bundle: one.path) }
    }
}
