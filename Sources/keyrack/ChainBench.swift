import ArgumentParser
import Crypto
import Foundation
import NodeAgent
import SwiftASN1
import TrustQuorum
import X509

/// `keyrack bench chain`: what a peer's crafted certificate chain costs a
/// node (review H3), with the peer's certificates fed to the path search
/// as an earlier release did, and with the verification callback as it is.
struct ChainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chain",
        abstract: "Time a crafted peer chain (review H3): the unbounded path search against Keyrack's callback.",
        discussion: """
            The peer presents a leaf it signed itself, named as issued by the rack's \
            intermediate, and N certificates with the intermediate's name and its own key, each \
            a possible issuer of every other. unbounded_ms: swift-certificates' verifier given \
            them as untrusted intermediates (what the node did before: every peer-supplied \
            certificate entered the path search, on the one verification queue every \
            handshake shares). N doubles from 1 up to --maximum; once one search takes longer \
            than --budget, larger N are not searched. callback_us: the verification callback as it is \
            (NodeTLSIdentity.judgeChain), median of --samples, which refuses more than 2 \
            certificates before parsing them and searches only the configured intermediate. \
            Run a release build.
            """
    )

    @Option(help: "The largest N to try.") var maximum = 10
    @Option(help: "Stop growing N once one unbounded search takes longer than this many seconds.")
    var budget = 5.0
    @Option(help: "Timed samples of the callback per N (the median is over these).") var samples = 201
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        try await reportingAsyncFailures {
            guard maximum >= 1, maximum <= 1024, budget > 0, samples > 0 else {
                throw CommandFailure("--maximum must be 1…1024, --budget and --samples positive")
            }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "keyrack-chain-bench-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let ca = try ManufacturingCA.create(in: directory)
            let crafted = try CraftedChain(intermediate: ca.intermediate, count: maximum)
            var rows: [(count: Int, unbounded: Double?, callback: Double)] = []
            var stopped = false
            var counts = Array(sequence(first: 1) { $0 * 2 }.prefix { $0 <= maximum })
            if counts.last != maximum { counts.append(maximum) }
            for count in counts {
                let presented = crafted.presented(count)
                var unbounded: Double?
                if !stopped {
                    let clock = ContinuousClock()
                    let start = clock.now
                    let verified = try? await DeviceIdentity.verifiedChain(
                        crafted.leaf, intermediates: [ca.intermediate] + Array(crafted.issuers.prefix(count)),
                        root: ca.root)
                    guard verified == nil else { throw CommandFailure("the crafted chain verified: a bug") }
                    let elapsed = clock.now - start
                    let milliseconds =
                        Double(elapsed.components.seconds) * 1e3
                        + Double(elapsed.components.attoseconds) / 1e15
                    unbounded = milliseconds
                    stopped = milliseconds > budget * 1000
                }
                var refusedAll = true
                let nanoseconds = await medianNanoseconds(samples: samples, batch: 1) {
                    let judgement = await NodeTLSIdentity.judgeChain(
                        presented, intermediate: ca.intermediate, root: ca.root)
                    if case .admitted = judgement { refusedAll = false }
                }
                guard refusedAll else { throw CommandFailure("the callback admitted the crafted chain: a bug") }
                rows.append((count, unbounded, Double(nanoseconds) / 1000))
            }
            if json {
                let items = rows.map { row in
                    "{\"crafted\": \(row.count), \"unbounded_ms\": \(row.unbounded.map { String(format: "%.3f", $0) } ?? "null"), \"callback_us\": \(String(format: "%.1f", row.callback))}"
                }
                try writeStandardOutput("{\"rows\": [\(items.joined(separator: ", "))]}\n")
            } else {
                var text = "crafted  unbounded_ms  callback_us\n"
                for row in rows {
                    let unbounded = row.unbounded.map { String(format: "%.3f", $0) } ?? "(skipped)"
                    text +=
                        "\(String(row.count).padding(toLength: 9, withPad: " ", startingAt: 0))"
                        + "\(unbounded.padding(toLength: 14, withPad: " ", startingAt: 0))"
                        + String(format: "%.1f", row.callback) + "\n"
                }
                try writeStandardOutput(text)
            }
        }
    }
}

/// A peer's crafted chain: a leaf it signed with its own key, issued in the
/// name of the rack's intermediate, and certificates with that name and
/// that key, each a CA that could have issued every other.
struct CraftedChain {
    let leaf: Certificate
    let issuers: [Certificate]

    init(intermediate: Certificate, count: Int) throws {
        let key = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        let now = Date()
        let name = intermediate.subject
        issuers = try (0..<count).map { index in
            try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(bytes: [0x40] + UInt16(index + 1).bigEndianBytes),
                publicKey: key.publicKey, notValidBefore: now - 3600, notValidAfter: now + 86_400, issuer: name,
                subject: name, signatureAlgorithm: .ed25519,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                    Critical(KeyUsage(keyCertSign: true))
                }, issuerPrivateKey: key)
        }
        leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: [0x7F, 0x01]),
            publicKey: key.publicKey, notValidBefore: now - 3600, notValidAfter: now + 86_400, issuer: name,
            subject: try PlatformIdentity.subject(for: PlatformId(part: "913-0000019", serial: "sn-crafted")),
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
            }, issuerPrivateKey: key)
    }

    /// What the peer presents with `count` crafted issuers: DER, leaf first.
    func presented(_ count: Int) -> [[UInt8]] {
        ([leaf] + issuers.prefix(count)).map { certificate in
            var serializer = DER.Serializer()
            try? serializer.serialize(certificate)
            return serializer.serializedBytes
        }
    }
}
