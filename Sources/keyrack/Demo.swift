import ArgumentParser
import Attestation
import Crypto
import Foundation
import KeyRelease
import Logging
import SecretSharing
import Simulation

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Walk through what Keyrack can do today, on embedded defaults.",
        discussion: """
            Three parts, all on this machine: (1) the secret-sharing layer of the trust \
            quorum: a rack secret split among nodes, rebuilt after a power cut, a lost \
            share recomputed, a wrong share caught; (2) attested key release: a real KMS \
            on loopback HTTP releasing a key to a node that proves its identity and its \
            software with a software-TEE quote, and refusing one whose measurements are \
            not in the policy; (3) the trust-quorum protocol rotating epochs under \
            faults in the deterministic simulator. The networked rack (nodes over \
            attested mTLS with durable ledgers) is not built yet, and the demo says so. \
            No secret is printed: secrets appear as short fingerprints.
            """
    )

    @Option(help: "Nodes in the demo rack (3-32).") var nodes = 5
    @Option(help: "Threshold K (default: nodes/2 + 1).") var threshold: Int?

    func run() async throws {
        try await reportingAsyncFailures {
            guard (3...32).contains(nodes) else { throw CommandFailure("--nodes must be from 3 to 32") }
            let k = threshold ?? nodes / 2 + 1
            guard (2..<nodes).contains(k) else { throw CommandFailure("--threshold must be from 2 to \(nodes - 1)") }
            var out = DemoPrinter()
            try runDemo(nodes: nodes, threshold: k, out: &out)
            try await runKeyReleaseDemo(out: &out)
            runSimulationDemo(nodes: nodes, out: &out)
            out.say()
            out.say("Not built yet: the networked rack (nodes over attested mTLS, durable ledgers, operator commands).")
            out.say("More: keyrack kms serve --help, keyrack sim --help, keyrack attest verify --help.")
        }
    }
}

/// Prints lines as they come, so a person sees progress.
struct DemoPrinter {
    mutating func say(_ line: String = "") {
        print(line)
    }
}

/// A short, non-reversible name for a secret (the first 8 bytes of a
/// domain-separated SHA-256), safe to print.
func fingerprint(_ secret: SecretBytes) -> String {
    var hasher = SHA256()
    hasher.update(data: Array("keyrack-demo-fingerprint".utf8))
    secret.withUnsafeBytes { hasher.update(bufferPointer: $0) }
    return "fp:" + Array(hasher.finalize()).prefix(8).hexString
}

func runDemo(nodes: Int, threshold k: Int, out: inout DemoPrinter) throws {
    out.say("Keyrack demo, part 1: the secret-sharing layer of the trust quorum")
    out.say("Constant-time Shamir sharing over GF(2^8), in this process.")
    out.say()

    var random = SystemRandomSource()
    var rackSecret = random.secretBytes(32)
    while rackSecret.withUnsafeBytes({ $0.allSatisfy { $0 == 0 } }) { rackSecret = random.secretBytes(32) }
    out.say("1. Rack setup: \(nodes) nodes, threshold K = \(k).")
    out.say("   Drew a 32-byte rack secret \(fingerprint(rackSecret)).")

    let shares = try Shamir.split(rackSecret, threshold: k, shares: nodes)
    let digests = shares.map(\.digest)
    out.say("2. Split it: node i keeps the share at x = i; the configuration records each share's SHA-256:")
    for (share, digest) in zip(shares, digests) {
        out.say("   node-\(share.x)  x=\(share.x)  digest \(digest.hex.prefix(16))…")
    }

    let up = Array(shares.suffix(k))
    let down = shares.prefix(nodes - k).map { "node-\($0.x)" }.joined(separator: ", ")
    out.say("3. Power cut. \(down) stay down; \(up.count) nodes come back and pool their shares.")
    for share in up where !digests[Int(share.x) - 1].matches(share) {
        throw CommandFailure("node-\(share.x)'s share does not match its digest")
    }
    let rebuilt = try Shamir.combine(up, threshold: k)
    out.say(
        "   Each share checked against its digest; rebuilt \(fingerprint(rebuilt)): "
            + (rebuilt == rackSecret ? "matches the rack secret." : "MISMATCH"))
    guard rebuilt == rackSecret else { throw CommandFailure("the rebuilt secret does not match") }

    let lost = shares[0]
    let recomputed = try Shamir.recompute(at: lost.x, from: up, threshold: k)
    out.say("4. node-\(lost.x) lost its disk. Its share is recomputed from \(k) others at x = \(lost.x):")
    out.say(
        "   digest \(recomputed.digest.hex.prefix(16))… "
            + (digests[0].matches(recomputed) ? "matches the recorded digest." : "MISMATCH"))
    guard digests[0].matches(recomputed) else { throw CommandFailure("the recomputed share does not match") }

    let tooFew = Array(up.prefix(k - 1))
    let guess = try Shamir.combine(tooFew, threshold: k - 1)
    out.say(
        "5. An attacker with \(k - 1) shares (one short) interpolates anyway: \(fingerprint(guess)) — "
            + (guess == rackSecret
                ? "the secret (this must never happen)" : "not the secret; K−1 shares reveal nothing."))

    let liar = up[0]
    let forged = try Share(x: liar.x, y: SecretBytes(liar.y.unsafeCopiedBytes.map { $0 ^ 0x5A }))
    out.say("6. node-\(liar.x) lies and sends a forged share:")
    out.say(
        "   its digest "
            + (digests[Int(liar.x) - 1].matches(forged)
                ? "matches (bad!)" : "does not match the configuration: refused."))
    do {
        _ = try Shamir.combine(shares.map { $0.x == liar.x ? forged : $0 }, threshold: k)
        out.say("   combining with extra shares did not notice (bad!)")
    } catch {
        out.say("   and with more than K shares at hand, the extras expose it too: \(error).")
    }
}

/// Part 2: a real KMS on loopback, a node with a software TEE.
func runKeyReleaseDemo(out: inout DemoPrinter) async throws {
    out.say()
    out.say("Keyrack demo, part 2: attested key release")
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-demo-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: directory) }
    let teeDirectory = directory.appendingPathComponent("tee")
    let tee = try SoftwareTEE.initialize(directory: teeDirectory, now: Int64(Date().timeIntervalSince1970))
    let collateral = directory.appendingPathComponent("collateral")
    try FileManager.default.createDirectory(at: collateral, withIntermediateDirectories: true)
    try FileManager.default.copyItem(
        at: teeDirectory.appendingPathComponent("collateral.json"),
        to: collateral.appendingPathComponent("collateral.json")
    )
    let measured = try tee.quote(reportData: Array(repeating: 0, count: 64))
    let report = try Quote(bytes: measured).report
    let policy: [String: Any] = [
        "mrtd": [Array(report.mrTD).hexString], "rtmr0": [Array(report.rtmr0).hexString],
        "rtmr1": [Array(report.rtmr1).hexString], "rtmr2": [Array(report.rtmr2).hexString],
        "rtmr3": [Array(report.rtmr3).hexString], "tcbStatus": ["UpToDate"],
    ]
    let policyFile = directory.appendingPathComponent("policy.json")
    try JSONSerialization.data(withJSONObject: policy).write(to: policyFile)
    out.say("1. A software TEE (a test PKI shaped like Intel's; real v4 quote bytes) and a policy")
    out.say("   admitting its MRTD and RTMR0-3 with TCB status UpToDate.")

    var configuration = KMSConfiguration()
    configuration.listenPort = 0
    configuration.policyFile = policyFile.path
    configuration.collateralDirectory = collateral.path
    configuration.trustAnchorFile = teeDirectory.appendingPathComponent("root.der").path
    configuration.keyRootFile = directory.appendingPathComponent("kms-root.key").path
    let (addresses, announce) = AsyncStream<String>.makeStream()
    var quiet = Logger(label: "keyrack.demo")
    quiet.logLevel = .critical
    let server = Task { [configuration, quiet] in
        try await KMSServer.run(configuration: configuration, logger: quiet) { announce.yield($0) }
    }
    defer { server.cancel() }
    var iterator = addresses.makeAsyncIterator()
    guard let url = await iterator.next() else { throw CommandFailure("the KMS did not start") }
    out.say("2. KMS listening on \(url) (memory challenge store, local key root, DCAP with the test root).")

    let identity = PeerIdentity.generate()
    out.say("3. A node with libp2p identity \(identity.peerId.string.prefix(20))… asks for its key:")
    out.say("   POST /challenge → nonce; quote with report_data = nonce ‖ SHA-256(peerId); signs the nonce;")
    let client = try KeyReleaseClient(url: url, identity: identity, quotes: SoftwareTEEQuoteSource(tee: tee))
    let key = try await client.fetchKey()
    let again = try await client.fetchKey()
    out.say(
        "   POST /get-key → key \(fingerprint(key)); again → \(fingerprint(again)) "
            + (key == again ? "(deterministic)." : "(MISMATCH)"))
    let drifted = MeasurementDrift(tee: tee)
    do {
        _ = try await KeyReleaseClient(url: url, identity: .generate(), quotes: drifted).fetchKey()
        out.say("4. A node running other software got a key (bad!)")
    } catch {
        out.say("4. A node whose RTMR1 differs (other software) is refused: \(error.description).")
    }
    server.cancel()
    _ = await server.result
}

/// A software TEE whose RTMR1 measurement differs from the policy's.
struct MeasurementDrift: QuoteSource {
    let tee: SoftwareTEE
    func quote(reportData: [UInt8]) throws(QuoteSourceError) -> [UInt8] {
        do {
            return try tee.quote(reportData: reportData, rtmrs: [nil, Array(repeating: 0x42, count: 48), nil, nil])
        } catch {
            throw QuoteSourceError(error.description)
        }
    }
}

/// Part 3: the trust-quorum protocol in the deterministic simulator.
func runSimulationDemo(nodes: Int, out: inout DemoPrinter) {
    out.say()
    out.say("Keyrack demo, part 3: the trust-quorum protocol under faults (deterministic simulator)")
    var random = SystemRandomSource()
    let seed = random.next() % 1_000_000
    let outcome = SimulationRunner.run(SimulationOptions(nodes: nodes, seed: seed, events: 20_000))
    let report = outcome.report
    out.say("   \(nodes) nodes, seed \(seed), \(report.events) events with drops, reordering, duplicates,")
    out.say("   partitions and crashes; operators rotating, adding and removing nodes:")
    out.say(
        "   \(report.epochsCommitted) epochs committed, \(report.violations.count) invariant violations, "
            + "\(report.alarms) alarms; after healing every member loads the same secret: \(report.liveness ? "yes" : "NO")."
    )
    out.say("   Replay it: keyrack sim --nodes \(nodes) --seed \(seed) --events 20000 --log run.jsonl")
}
