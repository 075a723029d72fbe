import Foundation
import KeyrackTestSupport
import Testing

@Suite("keyrack ca and keyrack device, through the real binary")
struct IdentityCLITests {
    @Test("ca init, device init, ca sign; openssl verifies the chain independently", arguments: ["ed25519", "rsa4096"])
    func chain(keyType: String) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "cli-identity-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = directory.appendingPathComponent("ca").path
        let device = directory.appendingPathComponent("device").path
        #expect(try await runKeyrack(["ca", "init", "--dir", ca]).status == 0)
        let initialized = try await runKeyrack([
            "device", "init", "--dir", device, "--part", "913-0000019", "--serial", "BRM42220004", "--key-type",
            keyType,
        ])
        #expect(initialized.status == 0, "\(initialized.standardError)")
        let certificate = directory.appendingPathComponent("device.pem").path
        let signed = try await runKeyrack([
            "ca", "sign", "--dir", ca, "--csr", "\(device)/device.csr.pem", "--out", certificate,
        ])
        #expect(signed.status == 0, "\(signed.standardError)")

        guard let openssl = findExecutable("openssl") else {
            Issue.record("openssl is needed for the independent check: run `apt-get install -y openssl`")
            return
        }
        let verified = try await runToCompletion(
            URL(fileURLWithPath: openssl),
            ["verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/intermediate.pem", certificate]
        )
        #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
        let subject = try await runToCompletion(
            URL(fileURLWithPath: openssl), ["x509", "-noout", "-subject", "-in", certificate])
        #expect(subject.output.contains("913-0000019:BRM42220004"))
        // The device key is private to its owner.
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(device)/device.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test("bad input: one line naming the problem, exit 1")
    func bad() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "cli-identity-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let typeError = try await runKeyrack([
            "device", "init", "--dir", directory.path, "--part", "p", "--serial", "s", "--key-type", "dsa",
        ])
        #expect(typeError.status == 1)
        #expect(typeError.standardError.contains("--key-type"))
        let noCA = try await runKeyrack(["ca", "sign", "--dir", directory.path, "--csr", "/nonexistent.pem"])
        #expect(noCA.status == 1)
        #expect(noCA.standardError.hasPrefix("keyrack: "))
        #expect(try await runKeyrack(["ca", "init", "--dir", directory.appendingPathComponent("ca").path]).status == 0)
        let again = try await runKeyrack(["ca", "init", "--dir", directory.appendingPathComponent("ca").path])
        #expect(again.status == 1)
        #expect(again.standardError.contains("refusing to overwrite"))
        let notCSR = try await runKeyrack([
            "ca", "sign", "--dir", directory.appendingPathComponent("ca").path, "--csr", "/etc/hostname",
        ])
        #expect(notCSR.status == 1)
        #expect(notCSR.standardError.contains("not a PEM certificate signing request"))
    }
}
