import ArgumentParser
import KeyrackCore
import SecretSharing

struct ShamirCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shamir",
        abstract: "Split a secret into shares, combine shares, recompute a lost share.",
        discussion: """
            Shares are text lines `<x>:<hex>`, one per share, where x is the share's \
            x-coordinate (1-255). The field is GF(2^8) with the AES polynomial; the \
            arithmetic is constant time. Shares are secret material: handle them \
            like the secret.
            """,
        subcommands: [Split.self, Combine.self, Recompute.self]
    )

    struct Split: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read a secret on standard input and print N share lines, any K of which rebuild it."
        )

        @Option(help: "How many shares rebuild the secret (K, at least 2).")
        var threshold: Int

        @Option(help: "How many shares to make (N, K to 255).")
        var shares: Int

        @Flag(help: "Read the secret as one line of hex instead of raw bytes.")
        var hex = false

        func run() throws {
            try reportingFailures {
                let secret = try hex ? readHexSecret() : readStandardInput()
                guard secret.count > 0 else { throw CommandFailure("the secret on standard input is empty") }
                let made = try Shamir.split(secret, threshold: threshold, shares: shares)
                try writeStandardOutput(made.map { ShareText.format($0) + "\n" }.joined())
            }
        }

        private func readHexSecret() throws -> SecretBytes {
            let lines = try readStandardInputLines().filter { !$0.allSatisfy(\.isWhitespace) }
            guard lines.count == 1 else {
                throw CommandFailure("--hex expects exactly one line of hex on standard input, found \(lines.count)")
            }
            let line = lines[0].filter { !$0.isWhitespace }
            guard let secret = SecretBytes(hex: line) else {
                throw CommandFailure("line 1: the secret is not an even number of hex digits")
            }
            return secret
        }
    }

    struct Combine: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read share lines on standard input and write the secret.",
            discussion: """
                With --threshold K, at least K lines are needed and any beyond K are \
                checked against the first K (a wrong share is reported). Without it, \
                every line given is used and the count must be the threshold the \
                shares were made with: fewer gives a wrong secret that cannot be \
                detected.
                """
        )

        @Option(help: "The threshold the shares were made with (default: the number of lines).")
        var threshold: Int?

        @Flag(help: "Print the secret as hex instead of raw bytes.")
        var hex = false

        func run() throws {
            try reportingFailures {
                let shares = try readShares()
                let secret = try Shamir.combine(shares, threshold: threshold ?? shares.count)
                if hex {
                    try writeStandardOutput(secret.withUnsafeBytes { $0.hexString } + "\n")
                } else {
                    try secret.withUnsafeBytes { try writeStandardOutput($0) }
                }
            }
        }
    }

    struct Recompute: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read K share lines on standard input and print the share for another x-coordinate."
        )

        @Option(help: "The x-coordinate (1-255) of the share to recompute.")
        var x: Int

        @Option(help: "The threshold the shares were made with (default: the number of lines).")
        var threshold: Int?

        func run() throws {
            try reportingFailures {
                guard (1...255).contains(x) else { throw CommandFailure("--x must be from 1 to 255, got \(x)") }
                let shares = try readShares()
                let share = try Shamir.recompute(at: UInt8(x), from: shares, threshold: threshold ?? shares.count)
                try writeStandardOutput(ShareText.format(share) + "\n")
            }
        }
    }
}

/// Share lines from standard input; at least two are needed for anything.
private func readShares() throws -> [Share] {
    let shares = try ShareText.parse(lines: readStandardInputLines())
    guard shares.count >= 2 else {
        throw CommandFailure("not enough shares: \(shares.count) line(s) given, at least 2 needed")
    }
    return shares
}
