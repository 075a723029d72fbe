import ArgumentParser
import Crypto
import SecretSharing

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Walk through what Keyrack can do today, on embedded defaults.",
        discussion: """
            Today this shows the secret-sharing layer the trust quorum is built on: \
            a rack secret split among nodes, rebuilt after a power cut from a \
            threshold of shares, a lost share recomputed, and a wrong share caught. \
            It runs in one process; the networked rack, attestation and key release \
            are not built yet and the demo does not pretend they are. No secret is \
            printed: secrets appear as short fingerprints.
            """
    )

    @Option(help: "Nodes in the demo rack (3-32).") var nodes = 5
    @Option(help: "Threshold K (default: nodes/2 + 1).") var threshold: Int?

    func run() throws {
        try reportingFailures {
            guard (3...32).contains(nodes) else { throw CommandFailure("--nodes must be from 3 to 32") }
            let k = threshold ?? nodes / 2 + 1
            guard (2..<nodes).contains(k) else { throw CommandFailure("--threshold must be from 2 to \(nodes - 1)") }
            var out = DemoPrinter()
            try runDemo(nodes: nodes, threshold: k, out: &out)
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
    out.say("Keyrack demo: the secret-sharing layer of the trust quorum")
    out.say("What runs here: constant-time Shamir sharing over GF(2^8), in this process.")
    out.say("Not yet built (later work): networked nodes over attested mTLS, epochs, the KMS.")
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
    out.say()
    out.say("Done. Next: `keyrack shamir --help`, `keyrack bench shamir`.")
}
