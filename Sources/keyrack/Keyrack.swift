import ArgumentParser

/// The `keyrack` command: argument parsing and printing only; every
/// subcommand calls into a library module.
@main
struct Keyrack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyrack",
        abstract: "Unlock a rack's encrypted disks with a trust quorum, and release keys to attested nodes.",
        discussion: """
            Keyrack splits a rack secret among the rack's nodes with Shamir secret \
            sharing; a threshold of nodes rebuilds it at boot and derives the disk \
            keys from it. Run `keyrack demo` to see what exists today.
            """,
        subcommands: [Demo.self, ShamirCommand.self, BenchCommand.self, SimCommand.self]
    )
}
