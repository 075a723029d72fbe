import ArgumentParser
import Foundation
import KMSClient
import KeyRelease
import KeyReleaseServer
import KeyrackLab
import Logging

struct KMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms",
        abstract: "The attested key release service, and its client.",
        subcommands: [Serve.self, GetKey.self, InitRoot.self]
    )

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve POST /challenge and POST /get-key.",
            discussion: """
                Settings come from environment variables; each flag sets the variable of the \
                same name and wins over it:
                \(KMSConfiguration.variables.map { "  \($0.name): \($0.meaning)" }.joined(separator: "\n"))

                Keys are released only with a policy (POLICY_FILE) and collateral \
                (COLLATERAL_DIR, or PCCS_URL); until then /get-key answers 503 PolicyNotReady and \
                /readyz says why. Collateral that is missing or expired for a quote's platform \
                is 503 PolicyNotReady too, before the challenge is spent. SIGHUP reloads the \
                policy and COLLATERAL_DIR; so does editing them. SIGTERM or SIGINT stops gracefully.
                """
        )

        @Option(help: "LISTEN_ADDR") var listenAddr: String?
        @Option(help: "CHALLENGE_TTL_SECS") var challengeTtlSecs: String?
        @Option(help: "MAX_PENDING_CHALLENGES") var maxPendingChallenges: String?
        @Option(help: "MAX_PENDING_CHALLENGES_TOTAL") var maxPendingChallengesTotal: String?
        @Option(help: "IDLE_TIMEOUT_SECS") var idleTimeoutSecs: String?
        @Option(help: "MAX_CONNECTIONS") var maxConnections: String?
        @Option(help: "REDIS_URL") var redisUrl: String?
        @Option(help: "REDIS_CA_CERT") var redisCaCert: String?
        @Option(help: "POLICY_FILE") var policyFile: String?
        @Option(help: "KEY_PROVIDER (local | dstack)") var keyProvider: String?
        @Option(help: "KEY_ROOT_FILE") var keyRootFile: String?
        @Option(help: "DSTACK_SOCKET_PATH") var dstackSocketPath: String?
        @Option(help: "KEY_NAMESPACE_PREFIX") var keyNamespacePrefix: String?
        @Option(help: "TRUST_ANCHOR") var trustAnchor: String?
        @Option(help: "COLLATERAL_DIR") var collateralDir: String?
        @Option(help: "PCCS_URL") var pccsUrl: String?
        @Option(help: "TLS_CERT") var tlsCert: String?
        @Option(help: "TLS_KEY") var tlsKey: String?

        func run() async throws {
            var environment = ProcessInfo.processInfo.environment
            let flags: [(String, String?)] = [
                ("LISTEN_ADDR", listenAddr), ("CHALLENGE_TTL_SECS", challengeTtlSecs),
                ("MAX_PENDING_CHALLENGES", maxPendingChallenges), ("REDIS_URL", redisUrl), ("POLICY_FILE", policyFile),
                ("KEY_PROVIDER", keyProvider), ("KEY_ROOT_FILE", keyRootFile), ("DSTACK_SOCKET_PATH", dstackSocketPath),
                ("KEY_NAMESPACE_PREFIX", keyNamespacePrefix), ("TRUST_ANCHOR", trustAnchor),
                ("COLLATERAL_DIR", collateralDir), ("PCCS_URL", pccsUrl), ("TLS_CERT", tlsCert), ("TLS_KEY", tlsKey),
                ("MAX_PENDING_CHALLENGES_TOTAL", maxPendingChallengesTotal), ("IDLE_TIMEOUT_SECS", idleTimeoutSecs),
                ("MAX_CONNECTIONS", maxConnections), ("REDIS_CA_CERT", redisCaCert),
            ]
            for case (let name, let value?) in flags { environment[name] = value }
            let configuration: KMSConfiguration
            do {
                configuration = try KMSConfiguration(environment: environment)
            } catch {
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(2)
            }
            // Log lines (an audit line per key release) are written off the
            // request path, in order; everything is flushed before exiting.
            let output = BackgroundLogWriter.standardError
            LoggingSystem.bootstrap { label in output.logHandler(label: label) }
            defer { output.flush() }
            do {
                try await KMSServer.run(
                    configuration: configuration,
                    logger: Logger(label: "keyrack.kms"),
                    metrics: KMSMetrics(droppedLogLines: { output.droppedLines })
                )
            } catch let error as KMSConfigurationError {
                output.flush()
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(2)
            } catch let error as KeyProviderError {
                output.flush()
                writeStandardError("keyrack: \(error)\n")
                throw ExitCode(2)
            }
        }
    }

    struct InitRoot: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init-root",
            abstract: "Create the local key provider's 32-byte root (KEY_ROOT_FILE).",
            discussion: """
                Writes 32 random bytes to --out with mode 0600, synced, and never over an existing \
                file. Every key the local provider releases is derived from this root: give each \
                replica that must hand out the same keys a copy of this one file, keep a backup \
                where only the operator can read it, and never create a second one for the same \
                service. `kms serve` never creates a missing root: it refuses to start, naming \
                KEY_ROOT_FILE.
                """
        )
        @Option(help: "Where to write the root.") var out: String

        func run() throws {
            try reportingFailures {
                try LocalKeyProvider.createRoot(at: out)
                try writeStandardOutput("created the KMS key root \(out) (32 bytes, mode 0600)\n")
            }
        }
    }

    struct GetKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "get-key",
            abstract: "Fetch this node's storage key: challenge, quote, signature, key.",
            discussion: """
                --tee chooses where the quote comes from: software:DIR (a `keyrack tee init` \
                directory), dstack:SOCKET (the dstack agent), or tdx (this TD, through \
                /sys/kernel/config/tsm/report). With --out the 32 key bytes are written to \
                the file (mode 0600, atomically); otherwise the key is printed in base64.

                The KMS is reached over HTTPS, checked against the system's trust roots or \
                --ca-cert; plain http:// is accepted only for a loopback address and refused \
                for any other host before connecting. The challenge request proves this \
                peer's key, so nobody else can use up its challenges. The key is asked for \
                sealed (HPKE, X25519) to a key pair made in this process for this one release \
                and bound into the quote, so a TLS-terminating gateway or anyone in between \
                sees only ciphertext; a KMS that answers in the clear is refused. --no-wrap \
                asks for the key in the clear, for a KMS that cannot wrap.
                """
        )

        @Option(help: "The KMS, https://host[:port] (http:// only on loopback).") var url: String
        @Option(help: "The peer identity file (keyrack peer-id new).") var identity: String
        @Option(help: "software:DIR | dstack:SOCKET | tdx") var tee: String
        @Option(help: "Write the key to this file instead of printing it.") var out: String?
        @Option(help: "PEM CA certificates to trust for the KMS instead of the system's.") var caCert: String?
        @Flag(help: "Ask for the key in the clear instead of sealed to this process (a KMS that cannot wrap).")
        var noWrap = false

        func run() async throws {
            try await reportingAsyncFailures {
                let source = try quoteSource(tee)
                var client = try KeyReleaseClient(
                    url: url, identity: PeerIdentity.read(from: identity), quotes: source, caCertificateFile: caCert)
                client.wrapsKey = !noWrap
                let key = try await client.fetchKey()
                if let out {
                    try writeSecretFile(key, to: out)
                } else {
                    try writeStandardOutput(key.withUnsafeBytes { Data($0).base64EncodedString() } + "\n")
                }
            }
        }
    }
}

struct PeerIDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer-id",
        abstract: "Node identities for key release (libp2p Ed25519 peer ids).",
        subcommands: [New.self]
    )

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an Ed25519 identity file (mode 0600) and print its peer id."
        )
        @Option(help: "Where to write the identity; an existing file is never overwritten.") var out: String

        func run() throws {
            try reportingFailures {
                let identity = PeerIdentity.generate()
                try identity.write(to: out)
                try writeStandardOutput(identity.peerId.string + "\n")
            }
        }
    }
}

struct KMSBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms",
        abstract: "Load a KMS with the whole key-release flow from many peers at once.",
        discussion: """
            Each client has its own peer identity and keep-alive connection and repeats \
            challenge, quote, signature, get-key until --duration is up, the way Keyrack's \
            client does it: the challenge proven with the peer key, the key sealed to a wrap \
            key made for each release (--plain: neither). Latency is per \
            key release. Without --rate the clients run in a closed loop (each starts its \
            next release when the last ends): the run finds the highest throughput, and \
            latency is about concurrency / throughput. With --rate R the clients together \
            start R releases per second on a fixed, staggered schedule, and latency counts \
            from each release's scheduled start, so waiting behind a slow release is \
            measured, not hidden. Run a release build of both the KMS and this command. An \
            unreachable KMS stops the run at once; any failed release makes the exit \
            status 1 (after the report).
            """
    )

    @Option(help: "The KMS, http://host:port.") var url: String
    @Option(help: "Concurrent clients.") var concurrency = 64
    @Option(help: "Seconds to run.") var duration = 10
    @Option(help: "Key releases per second for all clients together (default: as many as the KMS answers).")
    var rate: Double?
    @Option(
        help: """
            Event-loop threads of the load generator (default: one per core). Fewer leaves more of a \
            shared machine to the server under test.
            """)
    var threads: Int?

    // Checked while parsing: the event loops are set up before `run`.
    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be from 1 to 256") }
    }
    @Option(help: "software:DIR | dstack:SOCKET | tdx") var tee: String
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(
        help: """
            Run the seed's plain flow (no proof of possession on /challenge, no key wrapping) instead of \
            Keyrack's client's hardened one, to see what the hardening costs.
            """)
    var plain = false

    func run() async throws {
        try await reportingAsyncFailures {
            guard concurrency > 0, duration > 0 else {
                throw CommandFailure("--concurrency and --duration must be positive")
            }
            if let rate, !(rate.isFinite && rate > 0 && rate <= 1_000_000) {
                throw CommandFailure("--rate must be a number of releases per second above 0 (at most 1000000)")
            }
            guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host
            else {
                throw CommandFailure("--url must be http://host:port")
            }
            let source = try quoteSource(tee)
            let endpoint = HTTPConnection.Endpoint.tcp(host: host, port: components.port ?? 80)
            // Fail at once, with the reason, rather than report a run of
            // nothing but connection errors.
            do {
                let probe = try await HTTPConnection.connect(to: endpoint)
                probe.close()
            } catch {
                throw CommandFailure("cannot reach the KMS at \(url): \(error)")
            }
            let report = await LoadGenerator.run(
                endpoint: endpoint,
                concurrency: concurrency,
                duration: .seconds(duration),
                rate: rate,
                quotes: source,
                hardened: !plain
            )
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                try writeStandardOutput(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
            } else {
                try writeStandardOutput(
                    """
                    \(report.requests) key releases in \(report.durationSeconds) s: \(report.rps)/s\
                    \(report.targetRps.map { " (scheduled \($0)/s)" } ?? ""), \
                    p50 \(report.p50Ms) ms, p99 \(report.p99Ms) ms, \(report.errors) errors

                    """
                )
            }
            if buildConfiguration != "release" {
                writeStandardError("keyrack: warning: this is a debug build; figures are not representative\n")
            }
            if report.errors > 0 {
                throw CommandFailure(
                    "\(report.errors) key releases failed; the figures do not describe a healthy run. "
                        + "First error: \(report.firstError ?? "unknown")")
            }
        }
    }
}

/// The quote source a `--tee` value names: software:DIR, dstack:SOCKET or tdx.
func quoteSource(_ tee: String) throws -> any QuoteSource {
    if tee == "tdx" { return ConfigfsTSMQuoteSource() }
    if tee.hasPrefix("software:") {
        return try SoftwareTEEQuoteSource(directory: URL(fileURLWithPath: String(tee.dropFirst(9))))
    }
    if tee.hasPrefix("dstack:") { return DstackQuoteSource(socketPath: String(tee.dropFirst(7))) }
    throw CommandFailure("--tee must be software:DIR, dstack:SOCKET or tdx")
}
