import Attestation
import Crypto
import Foundation
import NIOCore
import Testing
import TrustQuorum

@testable import NodeAgent

/// One run of the attestation exchange over real TLS on loopback: what
/// each side got, and (when both accepted) whether a protocol frame flows
/// afterwards on the same iterators.
struct ExchangeResult {
    var server: Result<AttestationOutcome, PeerChannelError>
    var client: Result<AttestationOutcome, PeerChannelError>
    var echo: String?

    var serverError: String? { if case .failure(let error) = server { error.reason } else { nil } }
    var clientError: String? { if case .failure(let error) = client { error.reason } else { nil } }
    var serverCode: PeerChannelErrorCode? { if case .failure(let error) = server { error.code } else { nil } }
    var clientCode: PeerChannelErrorCode? { if case .failure(let error) = client { error.code } else { nil } }
}

/// A test node: its TLS identity and attestor.
struct TestNode {
    let identity: NodeTLSIdentity
    let attestor: ChannelAttestor
}

/// The exchange's deadline in tests that expect no timeout: generous,
/// because the whole test run shares two cores and the cooperative thread
/// pool with CPU-bound tests (a test that expects a timeout sets a short one).
let testTimeout = Duration.seconds(60)

/// Measurements of this test process's executable, cached once per process.
let measurementCache = FileManager.default.temporaryDirectory.appendingPathComponent(
    "keyrack-test-measurements-\(getpid())")

extension Rack {
    /// A node whose evidence is its software root of trust's signed
    /// measurement log of the running executable.
    func softwareNode(
        _ serial: String, keyType: DeviceKeyType = .ed25519, policy: NodeAttestationPolicy,
        timeout: Duration = testTimeout, files: [MeasuredFile] = [.executable],
        clock: any Clock<Duration> = ContinuousClock()
    ) throws -> TestNode {
        let (identity, rootOfTrust) = try member(serial, keyType: keyType)
        let attestor = ChannelAttestor(
            rootOfTrust: rootOfTrust,
            evidence: .softwareRootOfTrust(measurementCacheDirectory: measurementCache, files: files),
            policy: policy, timeout: timeout, clock: clock)
        return TestNode(identity: identity, attestor: attestor)
    }

    /// A node in a (software) TD, quoting with `measurements` or the TEE's defaults.
    func tdxNode(
        _ serial: String, keyType: DeviceKeyType = .ed25519, tee: SoftwareTEE, measurements: TDMeasurements? = nil,
        policy: NodeAttestationPolicy
    ) throws -> TestNode {
        let (identity, rootOfTrust) = try member(serial, keyType: keyType)
        let attestor = ChannelAttestor(
            rootOfTrust: rootOfTrust,
            evidence: .tdxQuote(SoftwareTEEQuoteProvider(tee: tee, measurements: measurements)),
            policy: policy, timeout: testTimeout)
        return TestNode(identity: identity, attestor: attestor)
    }

    /// A software TEE in the rack's directory.
    func softwareTEE() throws -> SoftwareTEE {
        try SoftwareTEE.initialize(
            directory: directory.appendingPathComponent("tee"), now: Int64(Date().timeIntervalSince1970))
    }
}

/// A policy that allows exactly this process's executable.
func softwarePolicy(mode: AttestationMode = .enforce) throws -> NodeAttestationPolicy {
    NodeAttestationPolicy(
        mode: mode,
        softwareRootOfTrust: SoftwareMeasurementPolicy(
            allowing: try MeasurementLog.current(cacheDirectory: measurementCache)))
}

/// A policy that allows only another build of the executable.
func otherBuildPolicy(mode: AttestationMode = .enforce) -> NodeAttestationPolicy {
    NodeAttestationPolicy(
        mode: mode,
        softwareRootOfTrust: SoftwareMeasurementPolicy(allowed: ["executable": [otherBuildDigest]]))
}

let otherBuildDigest = Array(SHA256.hash(data: Array("another build".utf8)))

/// A policy that accepts the software TEE's quotes with its default measurements.
func tdxPolicy(_ tee: SoftwareTEE, mode: AttestationMode = .enforce) throws -> NodeAttestationPolicy {
    try NodeAttestationPolicy.load(
        contentsOf: writePolicy(NodeAttestationPolicy.json(allowing: nil, softwareTEE: tee, mode: mode)))
}

/// The same policy with collateral from the PCCS at `url` instead of the TEE's directory.
func tdxPolicy(_ tee: SoftwareTEE, pccs url: String) throws -> NodeAttestationPolicy {
    let json = NodeAttestationPolicy.json(allowing: nil, softwareTEE: tee)
    var object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    var tdx = try #require(object["tdx"] as? [String: Any])
    tdx["collateralDirectory"] = nil
    tdx["pccs"] = url
    object["tdx"] = tdx
    let data = try JSONSerialization.data(withJSONObject: object)
    return try NodeAttestationPolicy.load(contentsOf: writePolicy(String(decoding: data, as: UTF8.self)))
}

/// Writes `json` to a fresh temporary file.
func writePolicy(_ json: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString).json")
    try json.write(to: url, atomically: true, encoding: .utf8)
    return url
}

/// `attestor.attest` as a result.
func attest(
    _ attestor: ChannelAttestor, _ channel: PeerChannel,
    _ inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
    _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
) async -> Result<AttestationOutcome, PeerChannelError> {
    do {
        return .success(try await attestor.attest(channel, inbound: &inbound, outbound: outbound))
    } catch {
        return .failure(error)
    }
}

/// A listener that attests every peer with `node`'s attestor and, when
/// that succeeds, answers the next frame with "ack:" and the frame.
struct AttestingServer {
    let listener: PeerListener
    let results: AsyncStream<Result<AttestationOutcome, PeerChannelError>>
    let serving: Task<Void, any Error>

    init(_ node: TestNode) async throws {
        let listener = try await PeerTransport.listen(host: "127.0.0.1", port: 0, identity: node.identity)
        let (results, sink) = AsyncStream<Result<AttestationOutcome, PeerChannelError>>.makeStream()
        serving = Task {
            try await listener.run { peer in
                try? await peer.channel.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    let result = await attest(node.attestor, peer, &iterator, outbound)
                    sink.yield(result)
                    if case .success = result, let frame = try await iterator.next() {
                        try await outbound.write(ByteBuffer(string: "ack:" + String(buffer: frame)))
                    }
                }
            }
        }
        self.listener = listener
        self.results = results
    }

    /// The result of the first attestation, and stops listening.
    func finish() async -> Result<AttestationOutcome, PeerChannelError> {
        var iterator = results.makeAsyncIterator()
        let result = await iterator.next() ?? .failure(PeerChannelError(.closed, "the server never attested"))
        serving.cancel()
        await listener.close()
        return result
    }
}

/// Runs `server` and `client` against each other: each attests, and when
/// both accept, the client sends "ping" and the server answers "ack:ping".
func runExchange(server: TestNode, client: TestNode) async throws -> ExchangeResult {
    let listening = try await AttestingServer(server)
    let channel = try await PeerTransport.connect(
        host: "127.0.0.1", port: listening.listener.port, identity: client.identity)
    let (clientResult, echo) = try await channel.channel.executeThenClose { inbound, outbound in
        var iterator = inbound.makeAsyncIterator()
        let result = await attest(client.attestor, channel, &iterator, outbound)
        guard case .success = result else { return (result, nil as String?) }
        try await outbound.write(ByteBuffer(string: "ping"))
        return (result, try await iterator.next().map { String(buffer: $0) })
    }
    return ExchangeResult(server: await listening.finish(), client: clientResult, echo: echo)
}

/// Runs a genuine server against a scripted client that speaks raw frames
/// with `identity`; `script` gets the server's first frame and the channel.
func runScripted(
    server: TestNode,
    client identity: NodeTLSIdentity,
    script:
        @Sendable @escaping (
            _ first: ByteBuffer?, _ inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
            _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        ) async throws -> [AttestationFrame]
) async throws -> (server: Result<AttestationOutcome, PeerChannelError>, clientSaw: [AttestationFrame]) {
    let listening = try await AttestingServer(server)
    let channel = try await PeerTransport.connect(
        host: "127.0.0.1", port: listening.listener.port, identity: identity)
    let seen = try await channel.channel.executeThenClose { inbound, outbound in
        var iterator = inbound.makeAsyncIterator()
        return try await script(try await iterator.next(), &iterator, outbound)
    }
    return (await listening.finish(), seen)
}

/// The frames left on `inbound`, parsed (unparsable ones skipped), until it closes.
func remainingFrames(_ inbound: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) async
    -> [AttestationFrame]
{
    var frames: [AttestationFrame] = []
    while let frame = try? await inbound.next() {
        if let parsed = try? AttestationFrame(parsing: frame) { frames.append(parsed) }
        if frames.last?.isFinal == true { break }
    }
    return frames
}

extension Result {
    /// The error, if this is a failure.
    var failure: Failure? {
        if case .failure(let error) = self { error } else { nil }
    }
}
