import ArgumentParser
import Attestation
import Crypto
import Foundation
import KMSClient
import KeyRelease
import KeyReleaseServer
import KeyrackCore
import Logging
import SecretSharing

/// Prints lines as they come, so a person sees progress.
struct DemoPrinter {
    func say(_ line: String = "") {
        try? writeStandardOutput(line + "\n")
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

/// The KMS step: a real KMS on loopback, a node with a software TEE.
/// Returns a one-line result for the table.
func runKeyReleaseDemo(in directory: URL, out: inout DemoPrinter) async throws -> String {
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
    out.say("   a software TEE (a test PKI shaped like Intel's, real v4 quote bytes) and a KMS policy")
    out.say("   admitting its MRTD and RTMR0-3 with TCB status UpToDate")

    var configuration = KMSConfiguration()
    configuration.listenPort = 0
    configuration.policyFile = policyFile.path
    configuration.collateralDirectory = collateral.path
    configuration.trustAnchorFile = teeDirectory.appendingPathComponent("root.der").path
    configuration.keyRootFile = directory.appendingPathComponent("kms-root.key").path
    try LocalKeyProvider.createRoot(at: configuration.keyRootFile)
    let (addresses, announce) = AsyncStream<String>.makeStream()
    var quiet = Logger(label: "keyrack.demo")
    quiet.logLevel = .critical
    let server = Task { [configuration, quiet] in
        try await KMSServer.run(configuration: configuration, logger: quiet) { announce.yield($0) }
    }
    defer { server.cancel() }
    var iterator = addresses.makeAsyncIterator()
    guard let url = await iterator.next() else { throw CommandFailure("the KMS did not start") }
    out.say("   KMS listening on \(url) (memory challenge store, local key root, DCAP with the test root)")

    let identity = PeerIdentity.generate()
    out.say("   the node (libp2p id \(identity.peerId.string.prefix(20))…): POST /challenge, proving its peer key")
    out.say("   → nonce; an X25519 wrap key made in the TD; quote with report_data = nonce ‖")
    out.say("   SHA-256(peerId ‖ 0x00 ‖ wrapKey); nonce signed; POST /get-key → the key sealed to the TD (HPKE)")
    let client = try KeyReleaseClient(url: url, identity: identity, quotes: SoftwareTEEQuoteSource(tee: tee))
    let key = try await client.fetchKey()
    let again = try await client.fetchKey()
    out.say("   storage key \(fingerprint(key)); asked again → \(fingerprint(again))")
    guard key == again else { throw CommandFailure("the KMS released two different keys to one node") }
    let drifted = MeasurementDrift(tee: tee)
    var refusal = ""
    do {
        _ = try await KeyReleaseClient(url: url, identity: .generate(), quotes: drifted).fetchKey()
    } catch {
        refusal = error.description
    }
    server.cancel()
    _ = await server.result
    guard !refusal.isEmpty else { throw CommandFailure("a node running other software got a key") }
    out.say("   a node whose RTMR1 differs (other software) is refused: \(refusal)")
    return "key \(fingerprint(key)), same on re-ask; other software refused"
}

/// A software TEE whose RTMR1 measurement differs from the policy's.
struct MeasurementDrift: QuoteSource {
    let tee: SoftwareTEE
    func quote(reportData: [UInt8]) throws(QuoteSourceError) -> [UInt8] {
        do {
            return try tee.quote(reportData: reportData, rtmrs: [nil, Array(repeating: 0x42, count: 48), nil, nil])
        } catch {
            throw QuoteSourceError(.softwareTEE, error.description)
        }
    }
}
