import ArgumentParser
import Foundation
import Simulation

/// `keyrack sim debug LOG`: a step-through debugger over an event log, as an
/// interactive prompt or driven by a command file. Parsing and printing only;
/// the debugger is `Simulation.Debugger`.
struct SimDebugCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Step through a logged simulator run.",
        discussion: """
            Replays the event log written by `keyrack sim --log` one event at a time. \
            Commands: step [N], run, break event N | node ID | alarm, delete [N], \
            rewind [N], show node ID, diff, events [FROM TO], summary, help, quit. \
            With --commands FILE the commands are read from FILE (one a line) and \
            the transcript is printed; otherwise a prompt reads them from standard input.
            """
    )

    @Argument(help: "The event log (JSON lines) written by `keyrack sim`.")
    var log: String

    @Option(help: "Run the commands in this file instead of prompting.")
    var commands: String?

    func run() throws {
        let debugger = try Debugger(logText: String(contentsOfFile: log, encoding: .utf8))
        if let commands {
            print(debugger.run(script: try String(contentsOfFile: commands, encoding: .utf8)), terminator: "")
            return
        }
        print("\(debugger.events.count) events; type help for the commands")
        while true {
            print("(sim) ", terminator: "")
            fflush(nil)  // the prompt before reading; nil: every output stream
            guard let line = readLine() else { break }
            let command = line.trimmingCharacters(in: .whitespaces)
            if command == "quit" || command == "q" || command == "exit" { break }
            let output = debugger.execute(command)
            if !output.isEmpty { print(output) }
        }
    }
}
