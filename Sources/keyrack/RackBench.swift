import ArgumentParser
import Foundation
import KeyrackLab
import NodeAgent
import TrustQuorum
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// `keyrack bench rack`: a rack of node processes on loopback, or each on a host of its own, timed.
struct RackBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rack",
        abstract: "Time a local rack of node processes: unlock after a full restart, and a rotation.",
        discussion: """
            Sets up a rack of --nodes `keyrack node run` processes on 127.0.0.1 (as `keyrack \
            demo` does), stops them all, starts them all again and measures the time from the \
            last process starting until every node has unlocked; then rotates the rack secret \
            and measures the time until every node has committed, and unlocked, the new epoch. \
            Repeats --rounds times. Run a release build.

            With --hosts, every node runs on a host of its own (a network namespace on \
            10.77.0.0/24, joined by a bridge, as `keyrack demo --hosts` does): peers reach each \
            other through veth pairs instead of loopback. The operator drives the nodes over \
            their admin sockets. Needs root and `ip` from iproute2; the namespaces are deleted \
            when the run ends.
            """
    )

    @Option(help: "Nodes in the rack (3-32).") var nodes = 32
    @Option(help: "How many restart-and-rotate rounds.") var rounds = 3
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Run every node on a host of its own (network namespaces; needs root and iproute2).") var hosts = false

    func run() async throws {
        try await reportingAsyncFailures {
            guard (3...32).contains(nodes) else { throw CommandFailure("--nodes must be from 3 to 32") }
            guard rounds > 0 else { throw CommandFailure("--rounds must be positive") }
            if hosts, let missing = HostLab.requirements() {
                throw CommandFailure("--hosts: \(missing)")
            }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "keyrack-bench-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let progress = { (line: String) in if !json { writeStandardError(line + "\n") } }
            let lab = hosts ? try HostLab() : nil
            defer { lab?.destroy() }
            let rack = try LocalRack(
                directory: directory,
                executable: currentExecutable(),
                count: nodes,
                policy: try demoAttestationPolicy(cache: directory.appendingPathComponent("measurements")),
                hosts: lab
            )
            // Interrupted: stop the nodes and delete the namespaces before exiting.
            let registry = rack.processIdentifiers
            let watcher = Task {
                for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                    registry.signalAll(SIGKILL)
                    lab?.destroy()
                    try? FileManager.default.removeItem(at: directory)
                    writeStandardError("keyrack bench rack: interrupted; stopped the nodes\n")
                    Glibc.exit(130)
                }
            }
            defer { watcher.cancel() }
            do {
                var report = try await measure(rack, progress: progress)
                report.network = hosts ? "hosts" : "loopback"
                await rack.stopAll()
                try printReport(report)
            } catch {
                await rack.stopAll()
                throw error
            }
        }
    }

    struct Report: Encodable {
        var nodes: Int
        var network = "loopback"
        var setupSeconds: Double
        var unlockAfterLastStartSeconds: [Double]
        var rotationCommittedOnAllSeconds: [Double]
        var rotationUnlockedOnAllSeconds: [Double]

        enum CodingKeys: String, CodingKey {
            case nodes, network
            case setupSeconds = "setup_s"
            case unlockAfterLastStartSeconds = "unlock_after_last_start_s"
            case rotationCommittedOnAllSeconds = "rotation_committed_on_all_s"
            case rotationUnlockedOnAllSeconds = "rotation_unlocked_on_all_s"
        }
    }

    // Swift 6.3's optimizer crashes on this function in release builds
    // ("Found ownership error" in CopyPropagation), as on RackOperator.drive.
    @_optimize(none)
    private func measure(_ rack: LocalRack, progress: (String) -> Void) async throws -> Report {
        let all = Array(0..<nodes)
        var report = Report(
            nodes: nodes,
            setupSeconds: 0,
            unlockAfterLastStartSeconds: [],
            rotationCommittedOnAllSeconds: [],
            rotationUnlockedOnAllSeconds: []
        )
        progress("starting \(nodes) nodes and setting up the rack")
        let setupStart = ContinuousClock.now
        for index in all { try rack.launch(index) }
        for index in all { try await rack.waitUntilAnswering(index, timeout: .seconds(60)) }
        let operatorForAll = try rack.rackOperator()
        var epoch = try await operatorForAll.run(.initialize).epoch
        try await rack.waitUntil(all, timeout: .seconds(60), "unlocked") { $0.unlockedEpoch == epoch }
        report.setupSeconds = seconds(since: setupStart)
        progress(String(format: "set up at epoch \(epoch) in %.2f s", report.setupSeconds))
        for round in 1...rounds {
            await rack.stopAll()
            for index in all { try rack.launch(index) }
            let lastStarted = ContinuousClock.now
            try await rack.waitUntil(all, timeout: .seconds(60), "unlocked after the restart") {
                $0.unlockedEpoch == epoch
            }
            report.unlockAfterLastStartSeconds.append(seconds(since: lastStarted))

            let rotationStart = ContinuousClock.now
            let rotating = Task { try await operatorForAll.run(.rotate) }
            // The new epoch is above every epoch seen: watch for all nodes committing something newer.
            let old = epoch
            let committed = try await rack.waitUntil(all, timeout: .seconds(60), "committed the rotation") {
                ($0.committedEpoch ?? old) > old
            }
            report.rotationCommittedOnAllSeconds.append(seconds(since: rotationStart))
            epoch = try await rotating.value.epoch
            guard committed.allSatisfy({ $0.committedEpoch == epoch }) else {
                throw CommandFailure("nodes committed different epochs")
            }
            try await rack.waitUntil(all, timeout: .seconds(60), "unlocked the rotation") { $0.unlockedEpoch == epoch }
            report.rotationUnlockedOnAllSeconds.append(seconds(since: rotationStart))
            progress(
                String(
                    format:
                        "round %d: unlocked %.2f s after the last start; rotation committed on all in %.2f s, unlocked in %.2f s",
                    round, report.unlockAfterLastStartSeconds.last!, report.rotationCommittedOnAllSeconds.last!,
                    report.rotationUnlockedOnAllSeconds.last!))
        }
        return report
    }

    private func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    private func printReport(_ report: Report) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try writeStandardOutput(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
        } else {
            let worst = { (values: [Double]) in String(format: "%.2f", values.max() ?? 0) }
            try writeStandardOutput(
                """
                \(report.nodes) nodes on \(hosts ? "hosts of their own" : "loopback"), \(rounds) rounds (worst of each):
                  every node unlocked \(worst(report.unlockAfterLastStartSeconds)) s after the last one started
                  a rotation committed on all in \(worst(report.rotationCommittedOnAllSeconds)) s, unlocked on all in \(worst(report.rotationUnlockedOnAllSeconds)) s

                """)
        }
    }
}
