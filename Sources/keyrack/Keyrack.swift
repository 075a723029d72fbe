import ArgumentParser
import KeyRelease
import KeyReleaseServer

/// The `keyrack` command: argument parsing and printing only; every
/// subcommand calls into a library module.
@main
struct Keyrack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyrack",
        abstract: "Unlock a rack's encrypted disks with a trust quorum, and release keys to attested nodes.",
        discussion: """
            Keyrack splits a rack secret among the rack's nodes with Shamir secret \
            sharing; a threshold of nodes rebuilds it at boot and derives the disk \
            keys from it. Run `keyrack demo` to see what exists today.
            """,
        subcommands: [
            Demo.self, ShamirCommand.self, BenchCommand.self, AttestCommand.self, TeeCommand.self, KMSCommand.self,
            PeerIDCommand.self, SimCommand.self, CACommand.self, OperatorCommand.self, DeviceCommand.self,
            NodeCommand.self,
            RackCommand.self,
        ]
    )

    /// As ArgumentParser's, except that a usage error under `keyrack attest`
    /// exits with status 2 (its contract: 0 accepted, 1 rejected, 2 usage).
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            var command = try parseAsRoot(arguments)
            // The KMS and its load generator are network-bound services:
            // run their tasks on the event loops (see EventLoopExecutor).
            if command is KMSCommand.Serve {
                EventLoopExecutor.install()
            } else if let bench = command as? KMSBench {
                EventLoopExecutor.install(threads: bench.threads)
            }
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            if arguments.first == "attest", exitCode(for: error) == .validationFailure {
                writeStandardError(fullMessage(for: error) + "\n")
                Self.exit(withError: ExitCode(2))
            }
            Self.exit(withError: error)
        }
    }
}
