import Foundation
import KeyrackTestSupport
import Testing

/// The systemd units in `Packaging/systemd/` pass `systemd-analyze verify`
/// (with the `keyrack` under test as their program), and keep the root
/// file system out of the rack's hands. The `luks-bind`, `luks-format` and
/// `wait-volumes` commands explain themselves.
@Suite("Boot integration: systemd units and the volume commands")
struct SystemdUnitTests {
    static let units = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Packaging/systemd")
    static let names = ["keyrack-node.service", "keyrack-volumes.service", "keyrack-volumes.target"]

    static func unit(_ name: String) throws -> String {
        try String(contentsOf: units.appendingPathComponent(name), encoding: .utf8)
    }

    @Test("systemd-analyze verify accepts every unit")
    func verify() async throws {
        let analyze = try #require(
            ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            },
            "systemd-analyze is missing: apt-get install systemd")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "keyrack-units-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyrack = try keyrackExecutable().path
        for name in Self.names {
            // The units name the installed program; verify checks that it exists, so point them at the one under test.
            let text = try Self.unit(name).replacingOccurrences(of: "/usr/local/bin/keyrack", with: keyrack)
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let result = try await offCooperativePool {
            try runProcessBlocking(
                URL(fileURLWithPath: analyze), ["verify"] + Self.names.map { directory.appendingPathComponent($0).path }
            )
        }
        #expect(result.status == 0, "\(String(decoding: result.errors, as: UTF8.self))")
        #expect(String(decoding: result.errors, as: UTF8.self).isEmpty)

        // And verify can fail: a unit with an unknown program is refused.
        let broken = directory.appendingPathComponent("broken.service")
        try "[Unit]\nDescription=x\n[Service]\nExecStart=/nonexistent/keyrack\n".write(
            to: broken, atomically: true, encoding: .utf8)
        let refused = try await offCooperativePool {
            try runProcessBlocking(URL(fileURLWithPath: analyze), ["verify", broken.path])
        }
        #expect(refused.status != 0)
    }

    @Test("the node waits for the network, data mounts wait for the volumes, and no early-boot unit waits for the rack")
    func ordering() throws {
        let node = try Self.unit("keyrack-node.service")
        let volumes = try Self.unit("keyrack-volumes.service")
        let target = try Self.unit("keyrack-volumes.target")
        #expect(node.contains("After=network-online.target"))
        #expect(node.contains("ExecStart=/usr/local/bin/keyrack node run --config /etc/keyrack/node.json"))
        #expect(volumes.contains("Requires=keyrack-node.service") && volumes.contains("After=keyrack-node.service"))
        #expect(volumes.contains("ExecStart=/usr/local/bin/keyrack node wait-volumes"))
        #expect(target.contains("Requires=keyrack-volumes.service") && target.contains("After=keyrack-volumes.service"))
        #expect(target.contains("WantedBy=remote-fs.target"))
        for text in [node, volumes, target] {
            let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
            for early in ["local-fs.target", "local-fs-pre.target", "sysinit.target", "initrd", "cryptsetup.target"] {
                #expect(!lines.contains { $0.contains(early) }, "a unit line names \(early)")
            }
            #expect(!lines.contains { $0.hasPrefix("DefaultDependencies=no") })
        }
    }

    @Test(
        "luks-bind, luks-format and wait-volumes have --help; luks-bind needs exactly one way to get the existing key")
    func help() async throws {
        let bind = try await runKeyrack(["node", "luks-bind", "--help"])
        #expect(bind.status == 0)
        for words in ["--existing-key-file", "--existing-key-stdin", "keyrack", "pipes"] {
            #expect(bind.output.contains(words), "\(words)")
        }
        let format = try await runKeyrack(["node", "luks-format", "--help"])
        #expect(format.status == 0)
        #expect(format.output.contains("empty device"))
        let wait = try await runKeyrack(["node", "wait-volumes", "--help"])
        #expect(wait.status == 0)
        #expect(wait.output.contains("--timeout"))
        for arguments in [
            ["node", "luks-bind", "--config", "/nonexistent.json", "--disk", "data0"],
            [
                "node", "luks-bind", "--config", "/nonexistent.json", "--disk", "data0", "--existing-key-stdin",
                "--existing-key-file", "k",
            ],
        ] {
            let refused = try await runKeyrack(arguments)
            #expect(refused.status == 64, "\(refused.standardError)")
            #expect(refused.standardError.contains("exactly one of --existing-key-file FILE or --existing-key-stdin"))
        }
    }
}
