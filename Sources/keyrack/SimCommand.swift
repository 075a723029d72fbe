import ArgumentParser
import Foundation
import Simulation

/// `keyrack sim`: runs the deterministic trust-quorum simulator and prints one
/// JSON object. Parsing and printing only; the work is in `Simulation`.
struct SimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run the trust-quorum protocol through a deterministic, fault-injecting simulation.",
        discussion: """
            Simulates a rack of --nodes nodes and its control plane for --events random \
            events drawn from --seed: message deliveries, operator actions (rotate the \
            secret, add and remove nodes, load secrets) and the faults named by --faults. \
            Every invariant of the protocol is checked after every event. At the end all \
            faults are healed and liveness is checked: every member commits the last \
            configuration and loads the same secret, and older epochs stay readable.

            Prints one JSON object: events, events_per_sec, epochs_committed, alarms, \
            violations, liveness. Exits 0 only if there was no violation and liveness \
            holds. On a violation or a liveness failure the event log (JSON lines, enough to replay the run \
            exactly) is written to --log, or to keyrack-sim-<seed>.jsonl.

            --start lrtq starts the rack in the deprecated legacy mode (LRTQ) and adds the \
            upgrade to the trust quorum to the random actions; after the upgrade every member \
            must read the LRTQ secret as epoch 1.

            --replay FILE re-runs a logged event list instead of generating one. \
            --measure messages|catch-up prints protocol measurements instead of running. \
            --timeline FILE.svg draws the run: one lane per node over event time. \
            `keyrack sim debug LOG` steps through a logged run.
            """,
        subcommands: [SimDebugCommand.self]
    )

    @Option(help: "Initial number of members, 3…32.")
    var nodes: Int = 5

    @Option(help: "Seed of the run; the same seed gives the same run.")
    var seed: UInt64 = 1

    @Option(help: "Number of random events before healing.")
    var events: Int = 10_000

    @Option(
        help: ArgumentHelp(
            "Faults to inject: drop,reorder,duplicate,partition,crash,byzantine (or all, none).",
            discussion: """
                all is every network and crash fault; add byzantine (all,byzantine) for a node that forges \
                Expunged, CommitAdvance and Prepare at any epoch, sends shares that fail their digest and \
                replays old signed messages, checked by the shares-kept and only-signed-commits invariants.
                """))
    var faults: String = "all"

    @Option(help: "Write the event log (JSON lines) here.")
    var log: String?

    @Option(help: "Replay the event log in this file instead of generating events.")
    var replay: String?

    @Option(help: "Print a measurement instead of running: messages, catch-up.")
    var measure: String?

    @Option(help: "Control-plane ticks without progress before a reconfiguration is retried at the next epoch.")
    var stallTicks: Int = 25

    @Option(help: "How the rack starts: tq (a trust-quorum setup) or lrtq (legacy mode, upgraded during the run).")
    var start: String = "tq"

    @Flag(help: "Send every message through the binary wire format (slower).")
    var wire = false

    @Option(help: "Draw the run as an SVG timeline in this file (one lane per node).")
    var timeline: String?

    @Flag(help: "Print JSON (the only output format; accepted for clarity).")
    var json = false

    func validate() throws {
        guard (3...32).contains(nodes) else { throw ValidationError("--nodes must be 3…32") }
        guard events >= 0 else { throw ValidationError("--events must not be negative") }
        guard stallTicks >= 1 else { throw ValidationError("--stall-ticks must be at least 1") }
        guard FaultSet(parsing: faults) != nil else {
            throw ValidationError("--faults takes drop,reorder,duplicate,partition,crash,byzantine, all or none")
        }
        guard ["tq", "lrtq"].contains(start) else { throw ValidationError("--start takes tq or lrtq") }
        if let measure, !["messages", "catch-up"].contains(measure) {
            throw ValidationError("--measure takes messages or catch-up")
        }
    }

    func run() throws {
        if let measure {
            print(measure == "messages" ? SimulationRunner.measureMessages() : SimulationRunner.measureCatchUp())
            return
        }
        let outcome: SimulationRunner.Outcome
        if let replay {
            let text = try String(contentsOfFile: replay, encoding: .utf8)
            outcome = try SimulationRunner.replay(logText: text)
        } else {
            let options = SimulationOptions(
                nodes: nodes,
                seed: seed,
                events: events,
                faults: FaultSet(parsing: faults)!,
                stallTicks: stallTicks,
                wireEncoding: wire,
                startInLrtq: start == "lrtq"
            )
            outcome = SimulationRunner.run(options)
        }
        let failed = !outcome.report.violations.isEmpty || !outcome.report.liveness
        let path = log ?? (failed && replay == nil ? "keyrack-sim-\(seed).jsonl" : nil)
        if let path { try outcome.logText().write(toFile: path, atomically: true, encoding: .utf8) }
        if let timeline {
            let svg = Timeline.record(options: outcome.options, events: outcome.events).svg()
            try svg.write(toFile: timeline, atomically: true, encoding: .utf8)
        }
        print(outcome.json(logPath: path))
        if failed { throw ExitCode.failure }
    }
}
