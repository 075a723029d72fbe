import Foundation
import SecretSharing
import Testing
import TrustQuorum
import X509

@testable import NodeAgent

@Suite("Manufacturing CA and device identities")
struct IdentityTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("identity-\(UUID().uuidString)")

    @Test(
        "ca init, device init, ca sign: the device certificate chains to the root and binds the platform id",
        arguments: DeviceKeyType.allCases)
    func chain(type: DeviceKeyType) async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let ca = try ManufacturingCA(directory: directory.appendingPathComponent("ca"))
        let platform = PlatformId(part: "913-0000019", serial: "BRM42220004")
        let (rootOfTrust, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("device"),
            platform: platform,
            keyType: type
        )
        let certificate = try ca.sign(csr)
        #expect(certificate.publicKey == rootOfTrust.publicKey)
        let bound = try await DeviceIdentity.verify(certificate, intermediates: [ca.intermediate], root: ca.root)
        #expect(bound == platform)
        // The CSR file on disk is the one returned.
        let onDisk = try CertificateSigningRequest(
            pemEncoded: String(contentsOf: directory.appendingPathComponent("device/device.csr.pem"), encoding: .utf8)
        )
        #expect(onDisk == csr)
    }

    @Test("a certificate from another CA, or without its intermediate, does not verify")
    func otherCA() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let ours = try ManufacturingCA.create(in: directory.appendingPathComponent("ours"))
        let theirs = try ManufacturingCA.create(in: directory.appendingPathComponent("theirs"))
        let (_, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("device"),
            platform: PlatformId(part: "p", serial: "s")
        )
        let foreign = try theirs.sign(csr)
        await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(foreign, intermediates: [theirs.intermediate], root: ours.root)
        }
        let genuine = try ours.sign(csr)
        await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(genuine, intermediates: [], root: ours.root)
        }
        // Expired at the time of checking.
        await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(
                genuine,
                intermediates: [ours.intermediate],
                root: ours.root,
                now: Date().addingTimeInterval(40 * 365 * 86400)
            )
        }
    }

    @Test("the CA refuses a CSR whose signature does not verify, or whose subject names no platform")
    func badCSR() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let (rootOfTrust, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("device"),
            platform: PlatformId(part: "p", serial: "s")
        )
        let other = try SoftwareRootOfTrust.create(keyFile: directory.appendingPathComponent("other.key").path)
        let forged = try CertificateSigningRequest(
            version: .v1,
            subject: csr.subject,
            publicKey: rootOfTrust.publicKey,
            attributes: .init(),
            signatureAlgorithm: .ed25519,
            signature: try other.certificatePrivateKey.sign(
                bytes: Array("not the request".utf8), signatureAlgorithm: .ed25519)
        )
        #expect(throws: IdentityFileError.self) { try ca.sign(forged) }
        let nameless = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName { CommonName("no colon here") },
            privateKey: rootOfTrust.certificatePrivateKey,
            attributes: .init(),
            signatureAlgorithm: .ed25519
        )
        #expect(throws: IdentityFileError.self) { try ca.sign(nameless) }
    }

    @Test("nothing is overwritten: a second ca init or device init in the same place is refused")
    func noOverwrite() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        #expect(throws: IdentityFileError.self) {
            try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        }
        _ = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("d"), platform: PlatformId(part: "p", serial: "s"))
        #expect(throws: IdentityFileError.self) {
            try DeviceIdentity.initialize(
                directory: directory.appendingPathComponent("d"), platform: PlatformId(part: "p", serial: "s"))
        }
    }
}

@Suite("Key holders print redacted")
struct RedactionTests {
    @Test("a root of trust and a CA never print their keys")
    func redacted() throws {
        let seed = SecretBytes(Array(repeating: 0xAB, count: 32))
        let rootOfTrust = try SoftwareRootOfTrust(seed: seed)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redact-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = try ManufacturingCA.create(in: directory)
        let key = try Data(contentsOf: directory.appendingPathComponent("intermediate.key"))
        for text in ["\(rootOfTrust)", String(reflecting: rootOfTrust), "\(ca)", String(reflecting: ca)] {
            #expect(text.contains("redacted"))
            #expect(!text.lowercased().contains("abab"))
            #expect(!text.contains(key.map { String(format: "%02x", $0) }.joined().prefix(16)))
            #expect(!text.contains("171, 171"))
        }
    }
}
