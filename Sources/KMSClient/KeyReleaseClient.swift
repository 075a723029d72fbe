import AsyncHTTPClient
import Crypto
import Foundation
import KeyRelease
import KeyrackCore
import NIOCore
import NIOSSL
import Synchronization

/// The node side of key release: a proven challenge, a quote bound to the
/// nonce, the peer id and a wrap key held by this process, the signature,
/// and the key — sealed to the wrap key, so that a TLS-terminating gateway
/// or a man in the middle sees only ciphertext (review H2).
///
/// `https://` goes through async-http-client with the system's trust roots
/// or the CA given; plain `http://` is accepted for loopback only, and
/// refused for any other host before a connection is attempted.
public struct KeyReleaseClient: Sendable {
    /// Where the KMS is and how to reach it.
    public enum Transport: Sendable {
        /// HTTP/1.1 on one connection (loopback; the load generator).
        case connection(HTTPConnection.Endpoint)
        /// HTTPS through async-http-client: the base URL and, if given, the
        /// CA certificates (PEM) that the KMS's chain must lead to instead of
        /// the system's roots.
        case https(URL, trustRoots: [NIOSSLCertificate]?)
    }

    public let transport: Transport
    public let identity: PeerIdentity
    public let quotes: any QuoteSource
    /// Whether to ask for the key sealed to a wrap key made for this
    /// release (the default). Off only for a KMS that does not wrap.
    public var wrapsKey = true
    /// Whether to prove the peer key on `/challenge` (the default), so that
    /// requests by others in this peer's name cannot use up its challenges.
    public var provesPossession = true
    /// How long each request may take.
    public var timeout: Duration = .seconds(30)
    /// The last proof made: Ed25519 is deterministic, so within the same
    /// second the proof is the same bytes and need not be signed again.
    private let lastProof = ProofMemo()

    /// A client for the KMS at `endpoint` over plain HTTP.
    public init(endpoint: HTTPConnection.Endpoint, identity: PeerIdentity, quotes: any QuoteSource) {
        self.transport = .connection(endpoint)
        self.identity = identity
        self.quotes = quotes
    }

    /// A client for `https://host[:port]` (or `http://` on loopback).
    /// `caCertificateFile` is a PEM file of the CA certificates to trust
    /// instead of the system's.
    public init(
        url: String, identity: PeerIdentity, quotes: any QuoteSource, caCertificateFile: String? = nil
    ) throws(KeyReleaseClientError) {
        self.transport = try Self.transport(url: url, caCertificateFile: caCertificateFile)
        self.identity = identity
        self.quotes = quotes
    }

    /// The transport a KMS URL names, or why it is refused.
    public static func transport(url: String, caCertificateFile: String?) throws(KeyReleaseClientError) -> Transport {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty, components.user == nil, components.password == nil
        else { throw .local("the KMS URL must be https://host[:port] (http:// only on loopback), not \(url)") }
        if components.path != "" && components.path != "/" || components.query != nil || components.fragment != nil {
            throw .local("the KMS URL is the server's base, https://host[:port], without a path: \(url)")
        }
        switch scheme {
        case "https":
            var roots: [NIOSSLCertificate]?
            if let caCertificateFile {
                do {
                    roots = try NIOSSLCertificate.fromPEMFile(caCertificateFile)
                } catch {
                    throw .local("--ca-cert \(caCertificateFile): cannot read PEM certificates: \(error)")
                }
                if roots?.isEmpty ?? true {
                    throw .local("--ca-cert \(caCertificateFile): no certificate in the file")
                }
            }
            var base = URLComponents()
            base.scheme = "https"
            base.host = host
            base.port = components.port
            guard let baseURL = base.url else { throw .local("the KMS URL \(url) is not a valid URL") }
            return .https(baseURL, trustRoots: roots)
        case "http":
            guard isLoopbackHost(host) else {
                throw .local(
                    "plain http:// is refused for \(host), which is not loopback: the storage key would cross "
                        + "the network in the clear; use https://\(host)\(components.port.map { ":\($0)" } ?? "")")
            }
            if caCertificateFile != nil { throw .local("--ca-cert needs an https:// URL") }
            return .connection(.tcp(host: host, port: components.port ?? 80))
        default:
            throw .local("the KMS URL must be https:// (or http:// on loopback), not \(scheme)://")
        }
    }

    /// Runs the whole flow and returns the 32-byte key.
    public func fetchKey() async throws(KeyReleaseClientError) -> SecretBytes {
        switch transport {
        case .connection(let endpoint):
            let connection: HTTPConnection
            do {
                connection = try await HTTPConnection.connect(to: endpoint)
            } catch {
                throw .local(error.reason)
            }
            defer { connection.close() }
            return try await fetchKey(over: connection)
        case .https(let base, let roots):
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            if let roots { tls.trustRoots = .certificates(roots) }
            var configuration = HTTPClient.Configuration(
                tlsConfiguration: tls,
                redirectConfiguration: .disallow,
                timeout: .init(connect: .seconds(10), read: TimeAmount(timeout))
            )
            configuration.httpVersion = .http1Only
            // A refused certificate is final: fail at once rather than retry until the connect timeout.
            configuration.connectionPool.retryConnectionEstablishment = false
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let exchange = HTTPSExchange(client: client, base: base, timeout: timeout)
            let result: Result<SecretBytes, KeyReleaseClientError>
            do {
                result = .success(try await run(exchange))
            } catch {
                result = .failure(error)
            }
            try? await client.shutdown()
            return try result.get()
        }
    }

    /// Runs the whole flow on an open connection (the load generator reuses one).
    public func fetchKey(over connection: HTTPConnection) async throws(KeyReleaseClientError) -> SecretBytes {
        try await run(ConnectionExchange(connection: connection))
    }

    private func run(_ exchange: some KMSExchange) async throws(KeyReleaseClientError) -> SecretBytes {
        let peer = identity.peerId.string
        var request = ChallengeRequest(peerId: peer)
        if provesPossession {
            let time = Int64(Date().timeIntervalSince1970.rounded(.down))
            var proof = lastProof.state.withLock { $0?.time == time ? $0?.proof : nil }
            if proof == nil {
                do {
                    let made = try identity.sign(ChallengeProof.message(peerId: peer, time: time))
                    lastProof.state.withLock { $0 = (time, made) }
                    proof = made
                } catch {
                    throw .local("cannot sign the challenge proof")
                }
            }
            request = ChallengeRequest(peerId: peer, time: time, proof: proof.map { Data($0).base64EncodedString() })
        }
        let challenge: ChallengeResponse = try await post(exchange, "/challenge", request)
        guard let nonce = [UInt8](hex: challenge.nonce), nonce.count == 32 else {
            throw KeyReleaseClientError(status: 200, code: nil, message: "the KMS sent a malformed nonce")
        }
        // The wrap key lives only in this process (inside the TD) for this one release.
        let wrapPrivate = wrapsKey ? Curve25519.KeyAgreement.PrivateKey() : nil
        let wrapPublic = wrapPrivate.map { Array($0.publicKey.rawRepresentation) }
        let reportData = KeyWrapping.reportData(nonce: nonce, peerId: peer, wrapKey: wrapPublic)
        let quote: [UInt8]
        do {
            quote = try await quotes.quote(reportData: reportData)
        } catch {
            throw .local("cannot get a quote: \(error.reason)")
        }
        let signature: [UInt8]
        do {
            signature = try identity.sign(nonce)
        } catch {
            throw .local("cannot sign the nonce")
        }
        let response: GetKeyResponse = try await post(
            exchange, "/get-key",
            GetKeyRequest(
                challengeId: challenge.challengeId,
                quote: Data(quote).base64EncodedString(),
                signature: Data(signature).base64EncodedString(),
                wrapKey: wrapPublic.map { Data($0).base64EncodedString() }
            )
        )
        if let wrapPrivate {
            // Fail closed: a plain key where a sealed one was asked for is a
            // downgrade (an old server, or someone in between).
            guard response.key == nil, let text = response.wrappedKey, let wrapped = Data(base64Encoded: text) else {
                throw KeyReleaseClientError(
                    status: 200, code: nil,
                    message:
                        "the KMS did not seal the key to the wrap key it was sent; refusing a key sent in the clear")
            }
            do {
                return try KeyWrapping.open(Array(wrapped), with: wrapPrivate, challengeId: challenge.challengeId)
            } catch {
                throw KeyReleaseClientError(
                    status: 200, code: nil, message: "the wrapped key does not open with this release's wrap key")
            }
        }
        guard response.wrappedKey == nil, let text = response.key, let key = Data(base64Encoded: text), key.count == 32
        else {
            throw KeyReleaseClientError(status: 200, code: nil, message: "the KMS sent a malformed key")
        }
        return SecretBytes(key)
    }

    private func post<Request: FlatJSONMessage, Reply: FlatJSONMessage>(
        _ exchange: some KMSExchange,
        _ path: String,
        _ body: Request
    ) async throws(KeyReleaseClientError) -> Reply {
        let (status, bytes) = try await exchange.post(path, body.flatJSON)
        guard status == 200 else {
            let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(bytes))
            throw KeyReleaseClientError(
                status: status,
                code: decoded?.error,
                message: decoded.map { $0.message + ($0.field.map { " (field \($0))" } ?? "") } ?? "HTTP \(status)"
            )
        }
        if let reply = Reply(flatJSON: bytes) { return reply }
        do {
            return try JSONDecoder().decode(Reply.self, from: Data(bytes))
        } catch {
            throw KeyReleaseClientError(
                status: 200, code: nil, message: "the KMS answer to \(path) is not the expected JSON")
        }
    }
}

/// A client's last challenge proof (shared by copies of the client).
private final class ProofMemo: Sendable {
    let state = Mutex<(time: Int64, proof: [UInt8])?>(nil)
}

/// One POST of a JSON body, answered with a status and a body.
private protocol KMSExchange: Sendable {
    func post(_ path: String, _ body: [UInt8]) async throws(KeyReleaseClientError) -> (Int, [UInt8])
}

private struct ConnectionExchange: KMSExchange {
    let connection: HTTPConnection
    func post(_ path: String, _ body: [UInt8]) async throws(KeyReleaseClientError) -> (Int, [UInt8]) {
        do {
            let response = try await connection.request(.POST, path, body: body)
            return (response.status, response.body)
        } catch {
            throw .local(error.reason)
        }
    }
}

private struct HTTPSExchange: KMSExchange {
    let client: HTTPClient
    let base: URL
    let timeout: Duration
    /// Answers larger than this are refused (a key answer is under 200 bytes).
    static let maximumBody = 1 << 20

    func post(_ path: String, _ body: [UInt8]) async throws(KeyReleaseClientError) -> (Int, [UInt8]) {
        var request = HTTPClientRequest(url: base.absoluteString + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: TimeAmount(timeout))
            let collected = try await response.body.collect(upTo: Self.maximumBody)
            return (Int(response.status.code), Array(collected.readableBytesView))
        } catch {
            throw .local("cannot reach the KMS at \(base.absoluteString): \(error)")
        }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// A refusal from the KMS (status and code) or a failure to reach it.
public struct KeyReleaseClientError: Error, Equatable, Sendable, CustomStringConvertible {
    public let status: Int?
    public let code: String?
    public let message: String
    public var description: String {
        [status.map { "HTTP \($0)" }, code, message].compactMap { $0 }.joined(separator: " ")
    }

    /// A failure on this side: nothing was refused by the KMS.
    static func local(_ message: String) -> KeyReleaseClientError {
        KeyReleaseClientError(status: nil, code: nil, message: message)
    }
}
