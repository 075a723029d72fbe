import Foundation
import KeyrackTestSupport
import Testing

/// The Promela model in `Model/` is checked exhaustively with spin: the
/// protocol as specified must pass, and each deliberately weakened variant
/// must be rejected, so the check is known to be able to fail.
@Suite("The Promela model, checked exhaustively with spin", .serialized)
struct ModelCheckTests {
    static let model = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Model/trust-quorum.pml")

    @Test("the model of the protocol satisfies every invariant, over every interleaving")
    func correctModel() async throws {
        let output = try await verify(defines: [], optimization: "-O1")
        #expect(output.contains("errors: 0"), "\(output)")
        #expect(!output.contains("assertion violated"), "\(output)")
        // Exhaustive: a full search, not cut short by the depth bound or memory.
        #expect(output.contains("Full statespace search"), "\(output)")
        #expect(!output.contains("max search depth too small"), "\(output)")
        #expect(!output.contains("out of memory"), "\(output)")
        let stored = output.split(separator: "\n").first { $0.contains("states, stored") }
        let count = stored.flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        #expect(count > 100_000, "suspiciously few states: \(stored ?? "none")")
    }

    @Test("with a removed node that keeps its key and keeps sending forgeries, every invariant still holds")
    func rogueModel() async throws {
        // Without crashes: with them the search is about seven times larger (5.2 million states).
        let output = try await verify(defines: ["-DROGUE", "-DMAXCRASH=0"], optimization: "-O1")
        #expect(output.contains("errors: 0"), "\(output)")
        #expect(output.contains("Full statespace search"), "\(output)")
        #expect(!output.contains("max search depth too small"), "\(output)")
        let stored = output.split(separator: "\n").first { $0.contains("states, stored") }
        let count = stored.flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        #expect(count > 100_000, "suspiciously few states: \(stored ?? "none")")
    }

    @Test(
        "a weakened model is rejected",
        arguments: [
            ["WEAK_COMMIT_QUORUM"],  // commit after K - 1 acks: the secret of the committed epoch is unrecoverable
            ["WEAK_REUSE_EPOCH"],  // an aborted epoch is retried: two configurations for one epoch
            // A node commits a peer's configuration without checking its commit signature: the rogue's forgery.
            ["ROGUE", "MAXCRASH=0", "WEAK_TRUST_UNSIGNED_COMMIT"],
        ]
    )
    func weakenedModel(variant: [String]) async throws {
        // They fail within a few thousand states: compiling fast beats running fast.
        let output = try await verify(defines: variant.map { "-D\($0)" }, optimization: "-O0")
        #expect(output.contains("assertion violated"), "\(variant) was not rejected: \(output)")
        #expect(output.contains("errors: 1"), "\(output)")
    }

    /// Generates the verifier with `spin -a`, compiles it (`optimization`:
    /// pan.c is large, and -O2 costs more to compile than it saves here) and
    /// runs it; returns its output.
    func verify(defines: [String], optimization: String) async throws -> String {
        guard let spin = Self.findExecutable("spin") else {
            throw CLITestError("spin is not installed: the model check needs it (apt-get install -y spin)")
        }
        guard let cc = Self.findExecutable("cc") else { throw CLITestError("no C compiler (cc) to build the verifier") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-spin-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.copyItem(at: Self.model, to: directory.appendingPathComponent("model.pml"))
        let generate = try await Self.run(spin, defines + ["-a", "model.pml"], in: directory)
        guard generate.status == 0 else { throw CLITestError("spin -a failed: \(generate.output)") }
        let compile = try await Self.run(
            cc, [optimization, "-DSAFETY", "-DMEMLIM=4096", "-o", "pan", "pan.c"], in: directory)
        guard compile.status == 0 else { throw CLITestError("cc pan.c failed: \(compile.output)") }
        let check = try await Self.run(directory.appendingPathComponent("pan").path, ["-m100000"], in: directory)
        return check.output
    }

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    static func run(_ executable: String, _ arguments: [String], in directory: URL) async throws -> (
        status: Int32, output: String
    ) {
        try await offCooperativePool { try runBlocking(executable, arguments, in: directory) }
    }

    static func runBlocking(_ executable: String, _ arguments: [String], in directory: URL) throws -> (
        status: Int32, output: String
    ) {
        // At low priority, one at a time (the suite is serialized): the
        // verifier and its compilation take a core for a while, and
        // timing-sensitive tests run beside them.
        let nice = findExecutable("nice")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: nice ?? executable)
        process.arguments = nice == nil ? arguments : ["-n", "19", executable] + arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
