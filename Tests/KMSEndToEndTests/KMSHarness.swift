import Attestation
import Crypto
import Foundation
import KMSClient
import KeyRelease
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import Testing

/// A software TEE, a policy that admits its default measurements, and a
/// scratch directory.
final class Platform: @unchecked Sendable {
    let directory: URL
    let teeDirectory: URL
    let tee: SoftwareTEE
    let policyFile: URL
    let measurements: (mrtd: [UInt8], rtmrs: [[UInt8]])

    init(tcbStatus: TCBStatus = .upToDate) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kms-e2e-\(UUID().uuidString)")
        teeDirectory = directory.appendingPathComponent("tee")
        tee = try SoftwareTEE.initialize(
            directory: teeDirectory,
            options: TestPlatformOptions(tcbStatus: tcbStatus),
            now: Int64(Date().timeIntervalSince1970)
        )
        let state = try JSONSerialization.jsonObject(
            with: Data(contentsOf: teeDirectory.appendingPathComponent("tee.json")))
        let object = try #require(state as? [String: Any])
        let mrtd = try #require((object["mrtd"] as? String).flatMap { [UInt8](hex: $0) })
        let rtmrs = try #require((object["rtmrs"] as? [String])?.compactMap { [UInt8](hex: $0) })
        measurements = (mrtd, rtmrs)
        policyFile = directory.appendingPathComponent("policy.json")
        try writePolicy()
        try LocalKeyProvider.createRoot(at: rootFile.path)
    }

    /// The KMS's key root (`KEY_ROOT_FILE`), made as `keyrack kms init-root` makes it.
    var rootFile: URL { directory.appendingPathComponent("root.key") }

    /// Writes a policy admitting the default measurements and `tcbStatus`.
    func writePolicy(tcbStatus: [String] = ["UpToDate"]) throws {
        let policy: [String: Any] = [
            "mrtd": [measurements.mrtd.hexString],
            "rtmr0": [measurements.rtmrs[0].hexString], "rtmr1": [measurements.rtmrs[1].hexString],
            "rtmr2": [measurements.rtmrs[2].hexString], "rtmr3": [measurements.rtmrs[3].hexString],
            "tcbStatus": tcbStatus,
        ]
        try JSONSerialization.data(withJSONObject: policy).write(to: policyFile)
    }

    /// The environment for a KMS trusting this platform.
    func environment(port: Int, policy: Bool = true, extra: [String: String] = [:]) -> [String: String] {
        var environment = [
            "LISTEN_ADDR": "127.0.0.1:\(port)",
            "COLLATERAL_DIR": teeDirectory.path,
            "TRUST_ANCHOR": teeDirectory.appendingPathComponent("root.der").path,
            "KEY_ROOT_FILE": rootFile.path,
        ]
        if policy { environment["POLICY_FILE"] = policyFile.path }
        return environment.merging(extra) { $1 }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

/// A running `keyrack kms serve`.
final class KMS: @unchecked Sendable {
    let process: KeyrackProcess
    let port: Int

    /// Starts `keyrack kms serve`. With LISTEN_ADDR on port 0 the KMS picks
    /// a free port and the harness reads it from the KMS's "listening" log
    /// line, so parallel tests can never race for a port.
    init(_ environment: [String: String], scheme: String = "http") async throws {
        process = try KeyrackProcess(["kms", "serve"], environment: environment)
        var found: Int?
        for _ in 0..<500 {
            if let range = process.log.range(of: "url=\(scheme)://127.0.0.1:"),
                let number = Int(process.log[range.upperBound...].prefix { $0.isNumber })
            {
                found = number
                break
            }
            if !process.process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let port = found else { throw TestSupportError("the KMS did not come up:\n\(process.log)") }
        self.port = port
        if scheme == "https" { return }  // the caller probes it over TLS
        for _ in 0..<300 {
            if let connection = try? await HTTPConnection.connect(to: .tcp(host: "127.0.0.1", port: port)) {
                defer { connection.close() }
                if (try? await connection.request(.GET, "/healthz"))?.status == 200 { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportError("the KMS on port \(port) does not answer /healthz:\n\(process.log)")
    }

    /// Starts a KMS for `platform` on a free port.
    static func start(_ platform: Platform, policy: Bool = true, extra: [String: String] = [:]) async throws -> KMS {
        try await KMS(platform.environment(port: 0, policy: policy, extra: extra))
    }

    var endpoint: HTTPConnection.Endpoint { .tcp(host: "127.0.0.1", port: port) }

    /// One request on a fresh connection.
    func send(_ method: HTTPMethodName, _ path: String, json: String) async throws -> HTTPConnection.Response {
        let connection = try await HTTPConnection.connect(to: endpoint)
        defer { connection.close() }
        return try await connection.request(method == .post ? .POST : .GET, path, body: Array(json.utf8))
    }

    func post(_ path: String, _ object: [String: String]) async throws -> HTTPConnection.Response {
        let data = try JSONSerialization.data(withJSONObject: object)
        return try await send(.post, path, json: String(decoding: data, as: UTF8.self))
    }

    func challenge(for identity: PeerIdentity) async throws -> ChallengeResponse {
        let response = try await post("/challenge", ["peerId": identity.peerId.string])
        try #require(
            response.status == 200, "challenge: \(response.status) \(String(decoding: response.body, as: UTF8.self))")
        return try JSONDecoder().decode(ChallengeResponse.self, from: Data(response.body))
    }

    /// The `detail` of the audit line of key release number `index + 1`
    /// (what the answer leaves out), once the KMS has logged it.
    func lastAuditDetail(after index: Int) async throws -> String {
        for _ in 0..<250 {
            let lines = process.log.split(separator: "\n").filter { $0.hasSuffix("key release") }
            if lines.count > index, let range = lines[index].range(of: "detail=") {
                return String(lines[index][range.upperBound...])
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportError("no audit line \(index + 1) with a detail:\n\(process.log)")
    }

    deinit { process.stop() }
}

enum HTTPMethodName { case get, post }

/// What a get-key request is made of, so that tests can spoil one part.
struct KeyRequest {
    var challengeId: String
    var quote: [UInt8]
    var signature: [UInt8]

    /// A correct request for `challenge` by `identity` with a quote from `tee`.
    static func valid(
        _ challenge: ChallengeResponse,
        identity: PeerIdentity,
        tee: SoftwareTEE,
        mrTD: [UInt8]? = nil,
        rtmrs: [[UInt8]?] = [nil, nil, nil, nil],
        reportDataPeer: String? = nil,
        reportDataNonce: [UInt8]? = nil
    ) throws -> KeyRequest {
        let nonce = try #require([UInt8](hex: challenge.nonce))
        let peer = reportDataPeer ?? identity.peerId.string
        let reportData = (reportDataNonce ?? nonce) + Array(SHA256.hash(data: Array(peer.utf8)))
        return KeyRequest(
            challengeId: challenge.challengeId,
            quote: try tee.quote(reportData: reportData, mrTD: mrTD, rtmrs: rtmrs),
            signature: try identity.sign(nonce)
        )
    }

    var body: [String: String] {
        [
            "challengeId": challengeId, "quote": Data(quote).base64EncodedString(),
            "signature": Data(signature).base64EncodedString(),
        ]
    }
}

extension HTTPConnection.Response {
    var error: ErrorBody? { try? JSONDecoder().decode(ErrorBody.self, from: Data(body)) }
    var text: String { String(decoding: body, as: UTF8.self) }
}
