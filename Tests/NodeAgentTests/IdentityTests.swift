import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import Testing
import TrustQuorum
import X509
import _CryptoExtras

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
        let other = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(foreign, intermediates: [theirs.intermediate], root: ours.root)
        }
        #expect(other?.code == .unverified)
        let genuine = try ours.sign(csr)
        let alone = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(genuine, intermediates: [], root: ours.root)
        }
        #expect(alone?.code == .unverified)
        // Expired at the time of checking.
        let late = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(
                genuine,
                intermediates: [ours.intermediate],
                root: ours.root,
                now: Date().addingTimeInterval(40 * 365 * 86400)
            )
        }
        #expect(late?.code == .unverified)
    }

    @Test(
        "a leaf that chains to the root but is not a device certificate does not verify",
        arguments: [
            ("a CA", "is a CA certificate"), ("one for signing certificates", "key usage"),
            ("one for TLS servers only", "client and server"), ("one without key usage", "key usage"),
        ])
    func notDevice(kind: String, reason: String) async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let key = try SoftwareRootOfTrust(seed: SecretBytes(Array(repeating: 7, count: 32))).publicKey
        let platform = PlatformId(part: "p", serial: "s")
        let extensions: Certificate.Extensions
        switch kind {
        case "a CA":
            // RFC 5280 alone accepts it: a CA certificate may end a path.
            extensions = try ManufacturingCA.impostorExtensions
        case "one for signing certificates":
            extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            }
        case "one for TLS servers only":
            extensions = try Certificate.Extensions {
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
            }
        default:
            extensions = try Certificate.Extensions { try ExtendedKeyUsage([.serverAuth, .clientAuth]) }
        }
        let leaf = try ca.issue(platform, key: key, extensions: extensions)
        let refused = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(leaf, intermediates: [ca.intermediate], root: ca.root)
        }
        #expect(refused?.code == .unverified)
        // The reason names the device certificate rule that the leaf breaks.
        #expect(refused?.reason.contains(reason) == true, "\(String(describing: refused))")
        // The same issuance with a device certificate's extensions verifies.
        let device = try ca.issue(platform, key: key, extensions: try ManufacturingCA.deviceExtensions)
        #expect(try await DeviceIdentity.verify(device, intermediates: [ca.intermediate], root: ca.root) == platform)
        // The intermediate itself, as a leaf.
        let intermediate = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(ca.intermediate, intermediates: [], root: ca.root)
        }
        #expect(intermediate?.code == .unverified)
    }

    @Test("an expired device certificate, or one not yet valid, does not verify")
    func validity() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let (_, csr) = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("device"), platform: PlatformId(part: "p", serial: "s"))
        // Issued eleven years ago for ten years: expired a year ago.
        let expired = try ca.sign(csr, now: Date().addingTimeInterval(-11 * 365 * 86400))
        let stale = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(expired, intermediates: [ca.intermediate], root: ca.root)
        }
        #expect(stale?.code == .unverified)
        let future = try ca.sign(csr, now: Date().addingTimeInterval(86400))
        let early = await #expect(throws: IdentityFileError.self) {
            try await DeviceIdentity.verify(future, intermediates: [ca.intermediate], root: ca.root)
        }
        #expect(early?.code == .unverified)
        let current = try ca.sign(csr)
        let verified = try await DeviceIdentity.verifiedChain(current, intermediates: [ca.intermediate], root: ca.root)
        #expect(verified.chain == [current, ca.intermediate, ca.root])
    }

    @Test(
        "the CSR is signed inside the root of trust, whose signer cannot be serialised",
        arguments: DeviceKeyType.allCases)
    func signerHoldsNoKey(type: DeviceKeyType) throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let (rootOfTrust, csr) = try DeviceIdentity.initialize(
            directory: directory, platform: PlatformId(part: "p", serial: "s"), keyType: type)
        #expect(csr.publicKey == rootOfTrust.publicKey)
        #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
        #expect(csr.signatureAlgorithm == (type == .ed25519 ? .ed25519 : .sha256WithRSAEncryption))
        let exported = #expect(throws: RootOfTrustError.self) { try rootOfTrust.certificateSigner.serializeAsPEM() }
        #expect(exported?.code == .export)
    }

    @Test("the CA signs Ed25519 and RSA ≥ 3072 device keys only (NODE-IDENTITY-KEY-TYPE)")
    func deviceKeyTypes() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let subject = try PlatformIdentity.subject(for: PlatformId(part: "p", serial: "s"))
        func csr(_ key: Certificate.PrivateKey, _ algorithm: Certificate.SignatureAlgorithm) throws
            -> CertificateSigningRequest
        {
            try CertificateSigningRequest(
                version: .v1, subject: subject, privateKey: key, attributes: .init(), signatureAlgorithm: algorithm)
        }
        let p256 = try csr(Certificate.PrivateKey(P256.Signing.PrivateKey()), .ecdsaWithSHA256)
        let p256Error = #expect(throws: IdentityFileError.self) { try ca.sign(p256) }
        #expect(p256Error?.code == .keyType)
        let short = try csr(
            Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048)), .sha256WithRSAEncryption)
        let shortError = #expect(throws: IdentityFileError.self) { try ca.sign(short) }
        #expect(shortError?.code == .keyType)
        #expect(shortError?.reason.contains("RSA-2048") == true)
        let rsa = try csr(
            Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits3072)), .sha256WithRSAEncryption)
        #expect(try ca.sign(rsa).subject == subject)
        let ed25519 = try csr(Certificate.PrivateKey(Curve25519.Signing.PrivateKey()), .ed25519)
        #expect(try ca.sign(ed25519).subject == subject)
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
            signature: try other.certificateSigner.sign(
                bytes: Array("not the request".utf8), signatureAlgorithm: .ed25519)
        )
        #expect((#expect(throws: IdentityFileError.self) { try ca.sign(forged) })?.code == .forgedCSR)
        let nameless = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName { CommonName("no colon here") },
            privateKey: rootOfTrust.certificateSigner,
            attributes: .init(),
            signatureAlgorithm: .ed25519
        )
        #expect((#expect(throws: IdentityFileError.self) { try ca.sign(nameless) })?.code == .platform)
    }

    @Test("nothing is overwritten: a second ca init or device init in the same place is refused")
    func noOverwrite() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        let secondCA = #expect(throws: IdentityFileError.self) {
            try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        }
        #expect(secondCA?.code == .exists)
        _ = try DeviceIdentity.initialize(
            directory: directory.appendingPathComponent("d"), platform: PlatformId(part: "p", serial: "s"))
        let secondDevice = #expect(throws: IdentityFileError.self) {
            try DeviceIdentity.initialize(
                directory: directory.appendingPathComponent("d"), platform: PlatformId(part: "p", serial: "s"))
        }
        #expect(secondDevice?.code == .exists)
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

extension ManufacturingCA {
    /// A certificate under the intermediate for `platform`'s subject, with
    /// any `extensions`: what a rogue or careless CA could issue.
    func issue(_ platform: PlatformId, key: Certificate.PublicKey, extensions: Certificate.Extensions) throws
        -> Certificate
    {
        try Certificate(
            version: .v3,
            serialNumber: .init(),
            publicKey: key,
            notValidBefore: Date().addingTimeInterval(-3600),
            notValidAfter: Date().addingTimeInterval(86400),
            issuer: intermediate.subject,
            subject: try PlatformIdentity.subject(for: platform),
            signatureAlgorithm: .ed25519,
            extensions: extensions,
            issuerPrivateKey: intermediateKey
        )
    }

    /// A CA certificate's extensions, with TLS authentication allowed.
    static var impostorExtensions: Certificate.Extensions {
        get throws {
            try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            }
        }
    }
}
