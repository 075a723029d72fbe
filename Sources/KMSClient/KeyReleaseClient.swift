import Crypto
import Foundation
import KeyRelease
import KeyrackCore

/// The node side of key release: challenge, quote bound to the nonce and
/// the peer id, signature, key.
public struct KeyReleaseClient: Sendable {
    public let endpoint: HTTPConnection.Endpoint
    public let identity: PeerIdentity
    public let quotes: any QuoteSource

    /// A client for the KMS at `endpoint`.
    public init(endpoint: HTTPConnection.Endpoint, identity: PeerIdentity, quotes: any QuoteSource) {
        self.endpoint = endpoint
        self.identity = identity
        self.quotes = quotes
    }

    /// A client for `http://host:port`.
    public init(url: String, identity: PeerIdentity, quotes: any QuoteSource) throws(KeyReleaseClientError) {
        guard let components = URLComponents(string: url), components.scheme == "http",
            let host = components.host
        else { throw KeyReleaseClientError(status: nil, code: nil, message: "the KMS URL must be http://host:port") }
        self.init(endpoint: .tcp(host: host, port: components.port ?? 80), identity: identity, quotes: quotes)
    }

    /// Runs the whole flow on one connection and returns the 32-byte key.
    public func fetchKey() async throws(KeyReleaseClientError) -> SecretBytes {
        let connection: HTTPConnection
        do {
            connection = try await HTTPConnection.connect(to: endpoint)
        } catch {
            throw KeyReleaseClientError(status: nil, code: nil, message: error.reason)
        }
        defer { connection.close() }
        return try await fetchKey(over: connection)
    }

    /// Runs the whole flow on an open connection (the load generator reuses one).
    public func fetchKey(over connection: HTTPConnection) async throws(KeyReleaseClientError) -> SecretBytes {
        let challenge: ChallengeResponse = try await post(
            connection,
            "/challenge",
            ChallengeRequest(peerId: identity.peerId.string)
        )
        guard let nonce = [UInt8](hex: challenge.nonce), nonce.count == 32 else {
            throw KeyReleaseClientError(status: 200, code: nil, message: "the KMS sent a malformed nonce")
        }
        let reportData = nonce + Array(SHA256.hash(data: Array(identity.peerId.string.utf8)))
        let quote: [UInt8]
        do {
            quote = try await quotes.quote(reportData: reportData)
        } catch {
            throw KeyReleaseClientError(status: nil, code: nil, message: "cannot get a quote: \(error.reason)")
        }
        let signature: [UInt8]
        do {
            signature = try identity.sign(nonce)
        } catch {
            throw KeyReleaseClientError(status: nil, code: nil, message: "cannot sign the nonce")
        }
        let response: GetKeyResponse = try await post(
            connection,
            "/get-key",
            GetKeyRequest(
                challengeId: challenge.challengeId,
                quote: Data(quote).base64EncodedString(),
                signature: Data(signature).base64EncodedString()
            )
        )
        guard let key = Data(base64Encoded: response.key), key.count == 32 else {
            throw KeyReleaseClientError(status: 200, code: nil, message: "the KMS sent a malformed key")
        }
        return SecretBytes(key)
    }

    private func post<Request: FlatJSONMessage, Reply: FlatJSONMessage>(
        _ connection: HTTPConnection,
        _ path: String,
        _ body: Request
    ) async throws(KeyReleaseClientError) -> Reply {
        let response: HTTPConnection.Response
        do {
            response = try await connection.request(.POST, path, body: body.flatJSON)
        } catch {
            throw KeyReleaseClientError(status: nil, code: nil, message: error.reason)
        }
        guard response.status == 200 else {
            let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(response.body))
            throw KeyReleaseClientError(
                status: response.status,
                code: decoded?.error,
                message: decoded.map { $0.message + ($0.field.map { " (field \($0))" } ?? "") }
                    ?? "HTTP \(response.status)"
            )
        }
        if let reply = Reply(flatJSON: response.body) { return reply }
        do {
            return try JSONDecoder().decode(Reply.self, from: Data(response.body))
        } catch {
            throw KeyReleaseClientError(
                status: 200, code: nil, message: "the KMS answer to \(path) is not the expected JSON")
        }
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
}
