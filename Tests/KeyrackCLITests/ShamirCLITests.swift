import Foundation
import KeyrackTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("keyrack shamir, through the real binary")
struct ShamirCLITests {
    @Test("split then combine any K of the lines gives back raw bytes, zeros and newlines included")
    func rawRoundTrip() async throws {
        let secret = Data([0, 1, 2, 10, 13, 255, 0, 10] + Array(repeating: 0x41, count: 100))
        let split = try await runKeyrack(["shamir", "split", "--threshold", "3", "--shares", "5"], input: secret)
        #expect(split.status == 0, "\(split.standardError)")
        let lines = split.output.split(separator: "\n")
        #expect(lines.count == 5)
        #expect(lines.enumerated().allSatisfy { $1.hasPrefix("\($0 + 1):") })
        let chosen = [lines[4], lines[1], lines[2]].joined(separator: "\n") + "\n"
        let combine = try await runKeyrack(["shamir", "combine"], text: chosen)
        #expect(combine.status == 0, "\(combine.standardError)")
        #expect(combine.standardOutput == secret)
    }

    @Test("--hex in and out")
    func hexRoundTrip() async throws {
        let split = try await runKeyrack(
            ["shamir", "split", "--threshold", "2", "--shares", "3", "--hex"], text: "00ff10AB\n")
        #expect(split.status == 0, "\(split.standardError)")
        let lines = split.output.split(separator: "\n")
        let combine = try await runKeyrack(["shamir", "combine", "--hex"], text: "\(lines[2])\n\(lines[0])\n")
        #expect(combine.output == "00ff10ab\n")
    }

    @Test("recompute prints the line the member had")
    func recompute() async throws {
        let split = try await runKeyrack(
            ["shamir", "split", "--threshold", "3", "--shares", "6", "--hex"], text: "c0ffee")
        let lines = split.output.split(separator: "\n").map(String.init)
        let result = try await runKeyrack(
            ["shamir", "recompute", "--x", "4"],
            text: [lines[0], lines[5], lines[2]].joined(separator: "\n")
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.output == lines[3] + "\n")
    }

    @Test("with --threshold, extra lines are checked and a wrong one is reported")
    func forgedExtra() async throws {
        let split = try await runKeyrack(
            ["shamir", "split", "--threshold", "2", "--shares", "3", "--hex"], text: "0102")
        var lines = split.output.split(separator: "\n").map(String.init)
        // Flip the lowest bit of the last hex digit of share 3.
        let last = lines[2].last!.hexDigitValue!
        lines[2] = String(lines[2].dropLast()) + String(last ^ 1, radix: 16)
        let result = try await runKeyrack(
            ["shamir", "combine", "--threshold", "2"], text: lines.joined(separator: "\n"))
        #expect(result.status == 1)
        #expect(result.standardOutput.isEmpty)
        #expect(result.standardError.contains("does not agree"))
    }

    @Test(
        "bad input exits 1 with one line naming the problem and the line, and writes nothing",
        arguments: [
            (["shamir", "combine"], "1:00ff\n2-00ff\n", "line 2"),
            (["shamir", "combine"], "1:00ff\n1:00aa\n", "line 2: duplicate x-coordinate 1"),
            (["shamir", "combine"], "1:00ff\n\n3:00\n", "line 3"),
            (["shamir", "combine"], "1:00ff\n0:00aa\n", "line 2: x-coordinate 0"),
            (["shamir", "combine"], "1:00ff\n256:00aa\n", "line 2: x-coordinate must be"),
            (["shamir", "combine"], "1:00ff\n2:0g\n", "line 2: the share value is not"),
            (["shamir", "combine"], "1:00ff\n2:\n", "line 2: the share value is empty"),
            (["shamir", "combine"], "1:00ff\n", "not enough shares"),
            (["shamir", "combine", "--threshold", "3"], "1:00ff\n2:0011\n", "not enough shares: 2 given, 3 needed"),
            (["shamir", "recompute", "--x", "0"], "1:00\n2:00\n", "--x must be"),
            (["shamir", "recompute", "--x", "3"], "1:00ff\nx:00\n", "line 2"),
            (["shamir", "split", "--threshold", "1", "--shares", "3"], "abc", "threshold 1 is out of range"),
            (["shamir", "split", "--threshold", "3", "--shares", "2"], "abc", "threshold 3 is out of range"),
            (["shamir", "split", "--threshold", "2", "--shares", "256"], "abc", "share count 256"),
            (["shamir", "split", "--threshold", "2", "--shares", "3"], "", "empty"),
            (["shamir", "split", "--threshold", "2", "--shares", "3", "--hex"], "abc\n", "hex digits"),
            (["shamir", "split", "--threshold", "2", "--shares", "3", "--hex"], "ab\ncd\n", "exactly one line"),
        ]
    )
    func badInput(arguments: [String], input: String, expected: String) async throws {
        let result = try await runKeyrack(arguments, text: input)
        #expect(result.status == 1)
        #expect(result.standardOutput.isEmpty)
        let errorLines = result.standardError.split(separator: "\n")
        #expect(errorLines.count == 1, "\(result.standardError)")
        #expect(result.standardError.hasPrefix("keyrack: "))
        #expect(result.standardError.contains(expected), "\(result.standardError)")
        // Never echo share values back.
        #expect(!result.standardError.contains("00ff"))
    }

    @Test("--help explains the line format")
    func help() async throws {
        let result = try await runKeyrack(["shamir", "--help"])
        #expect(result.status == 0)
        #expect(result.output.contains("<x>:<hex>"))
    }
}

@Suite("keyrack demo and bench, through the real binary")
struct DemoCLITests {
    @Test("demo runs a whole rack on embedded defaults: every step passes, nothing secret printed, nothing left behind")
    func demo() async throws {
        let result = try await runKeyrack(["demo"])
        #expect(result.status == 0, "\(result.output)\n\(result.standardError)")
        let steps = [
            "1. set up the rack", "2. full restart", "3. two nodes down", "4. rotation with node 5 down",
            "5. add node 6", "6. remove node 2", "7. storage key from the KMS",
        ]
        for step in steps { #expect(result.output.contains("== \(step)"), "\(step)") }
        #expect(result.output.components(separatedBy: "   ✓ ").count == steps.count + 1)
        #expect(!result.output.contains("FAILED"))
        #expect(result.output.contains("node 5 caught up and unlocked"))
        #expect(result.output.contains("node 2 refused (expunged at epoch"))
        #expect(result.output.contains("HTTP 403 PolicyViolation"))
        // cryptsetup is installed here (.ci/run): node 1's LUKS2 image is bound, verified and re-keyed.
        let luks = result.output.split(separator: "\n").filter { $0.contains("LUKS2 image") }.map(String.init)
        #expect(luks.contains { $0.contains("node 1's LUKS2 image bound under epoch 1 (keyslots [0, 1]") }, "\(luks)")
        #expect(luks.contains { $0.contains("node 1's LUKS2 image verified at unlock with epoch 1's key") }, "\(luks)")
        #expect(
            luks.contains {
                $0.contains("node 1's LUKS2 image re-keyed") && $0.contains("(the old key no longer opens it)")
            },
            "\(luks)")
        #expect(!result.output.contains("skipped"))
        // Keys appear only as short fingerprints: no 32-byte value in hex anywhere.
        #expect(result.output.range(of: "[0-9a-f]{64}", options: .regularExpression) == nil)
        // Its directory (configurations, ledgers, sockets) is gone and no node process is left.
        let firstLine = try #require(result.output.split(separator: "\n").first)
        let directory = try #require(firstLine.components(separatedBy: " in ").last)
        #expect(!FileManager.default.fileExists(atPath: directory))
        let processes = try await runToCompletion(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", directory])
        #expect(processes.output.isEmpty)
    }

    @Test(
        "demo --hosts: each node on a host of its own, the operator on another, a partition during the rotation heals",
        .timeLimit(.minutes(5)))
    func demoOnHosts() async throws {
        #expect(getuid() == 0, ".ci/run runs the tests as root: network namespaces need it")
        let demo = try KeyrackProcess(["demo", "--hosts"], environment: [:])
        let status = try await offCooperativePool {
            demo.process.waitUntilExit()
            return demo.process.terminationStatus
        }
        let output = demo.log
        #expect(status == 0, "\(output)")
        let steps = [
            "1. set up the rack", "2. full restart", "3. two nodes down",
            "4. rotation with node 5 partitioned, then the heal and its catch-up", "5. add node 6", "6. remove node 2",
            "7. storage key from the KMS",
        ]
        for step in steps { #expect(output.contains("== \(step)"), "\(step)") }
        #expect(output.components(separatedBy: "   ✓ ").count == steps.count + 1)
        #expect(!output.contains("FAILED"))
        // The operator's commands ran on their own host, over the network admin API.
        #expect(output.contains("on the operator's host 10.77.0.2: keyrack rack init --threshold 3"))
        #expect(output.contains("on the operator's host 10.77.0.2: keyrack rack add --add 10.77.0.16:7101"))
        // The partition: the commit with 4 of 5 reachable, node 5 behind, then reached again and caught up.
        #expect(output.contains("4 of 5 members reachable, the commit needs 4 (K=3 + Z=1): it can still commit"))
        #expect(output.contains("node 5, cut off, is still at epoch 1"))
        #expect(output.contains("reachable again: kr-demo:sn-0005"))
        #expect(output.contains("healed, node 5 caught up and unlocked"))
        #expect(output.range(of: "[0-9a-f]{64}", options: .regularExpression) == nil)
        // Nothing left behind: its namespaces (named after its process id), its files, its processes.
        let namespaces = try await runToCompletion(URL(fileURLWithPath: "/usr/sbin/ip"), ["netns", "list"])
        #expect(!namespaces.output.contains("kr-\(demo.process.processIdentifier)-"), "\(namespaces.output)")
        let firstLine = try #require(output.split(separator: "\n").first)
        let directory = try #require(firstLine.components(separatedBy: " in ").last)
        #expect(directory.hasPrefix("/") && !FileManager.default.fileExists(atPath: directory))
        let processes = try await runToCompletion(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", directory])
        #expect(processes.output.isEmpty)
    }

    @Test("demo --hosts without root says what it needs and that the plain demo runs on loopback")
    func demoOnHostsUnprivileged() async throws {
        // As the unprivileged user nobody, from a copy it can reach (the checkout may be under /root).
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("demo-nobody-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let keyrack = scratch.appendingPathComponent("keyrack")
        try FileManager.default.copyItem(at: try keyrackExecutable(), to: keyrack)
        #expect(chmod(scratch.path, 0o755) == 0 && chmod(keyrack.path, 0o755) == 0)
        let result = try await runToCompletion(
            URL(fileURLWithPath: "/usr/sbin/runuser"), ["-u", "nobody", "--", keyrack.path, "demo", "--hosts"])
        #expect(result.status == 1)
        #expect(result.errors.contains("separate hosts need root"), "\(result.errors)")
        #expect(result.errors.contains("The plain `keyrack demo` runs the same story on loopback"))
        #expect(result.output.isEmpty)
    }

    @Test("demo interrupted by SIGINT: stops its nodes, removes its directory, exits 130", .timeLimit(.minutes(2)))
    func demoInterrupted() async throws {
        let demo = try KeyrackProcess(["demo"], environment: [:])
        // Wait (at most 60 s) until the first line names the directory and a node of it runs.
        var directory: String?
        for _ in 0..<600 {
            if directory == nil, let first = demo.log.split(separator: "\n").first, first.contains(" in ") {
                directory = first.components(separatedBy: " in ").last
            }
            if let directory {
                let nodes = try await runToCompletion(
                    URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", "node run --config \(directory)/"])
                if !nodes.output.isEmpty { break }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let root = try #require(directory, "the demo never printed its directory: \(demo.log)")
        let running = try await runToCompletion(
            URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", "node run --config \(root)/"])
        #expect(!running.output.isEmpty, "no node of the demo ran: \(demo.log)")
        demo.signal(SIGINT)
        let status = try await offCooperativePool {
            demo.process.waitUntilExit()
            return demo.process.terminationStatus
        }
        #expect(status == 130, "\(demo.log)")
        #expect(demo.log.contains("keyrack demo: interrupted; stopped the nodes"))
        #expect(!FileManager.default.fileExists(atPath: root))
        let left = try await runToCompletion(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", root])
        #expect(left.output.isEmpty, "node processes left: \(left.output)")
    }

    @Test("demo on a machine without cryptsetup: says what it skipped and why, and tells the rest of the story")
    func demoWithoutCryptsetup() async throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("no-cryptsetup-\(UUID())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let result = try await runKeyrack(["demo"], environment: ["KEYRACK_TEST_CRYPTSETUP_PATH": empty.path])
        #expect(result.status == 0, "\(result.output)\n\(result.standardError)")
        let reason = try #require(
            result.output.split(separator: "\n").first { $0.hasPrefix("The LUKS2 steps are skipped: ") })
        #expect(reason.contains("install the Debian package cryptsetup-bin"), "\(reason)")
        #expect(
            result.output.contains(
                "skipped: the LUKS2 volume steps (cryptsetup is not installed: apt-get install cryptsetup-bin)"))
        #expect(!result.output.contains("LUKS2 image bound"))
        #expect(result.output.components(separatedBy: "   ✓ ").count == 8)
        #expect(!result.output.contains("FAILED"))
    }

    @Test("bench shamir --json prints one JSON object with the three medians")
    func bench() async throws {
        let result = try await runKeyrack(
            ["bench", "shamir", "--shares", "5", "--threshold", "3", "--samples", "5", "--batch", "2", "--json"]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let object = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any]
        for key in ["split_ns", "combine_ns", "recompute_ns"] {
            let value = object?[key] as? Int
            #expect(value != nil && value! > 0, "\(key)")
        }
        #expect(object?["shares"] as? Int == 5)
    }
}
