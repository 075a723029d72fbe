import Foundation
import KeyrackCore
import NIOCore
import NIOPosix

/// Keys from the dstack guest agent over its Unix socket:
/// `POST /GetKey {"path": namespace + "/" + peerId, "purpose": "storage"}`
/// answers `{"key": "<hex>", "signature_chain": [...]}`; the first 32 bytes
/// of the key are used.
public struct DstackKeyProvider: KeyProvider {
    public let name = "dstack"
    /// The agent's socket (`DSTACK_SOCKET_PATH`, default `/var/run/dstack.sock`).
    public let socketPath: String
    /// How long one request may take.
    public let timeout: TimeAmount

    /// A provider talking to the agent at `socketPath`.
    public init(socketPath: String = "/var/run/dstack.sock", timeout: TimeAmount = .seconds(5)) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    struct GetKeyRequest: Encodable {
        let path: String
        let purpose: String
    }

    struct GetKeyResponse: Decodable {
        let key: String
        let signatureChain: [String]?

        enum CodingKeys: String, CodingKey {
            case key
            case signatureChain = "signature_chain"
        }
    }

    public func deriveKey(namespace: String, peerId: String) async throws(KeyProviderError) -> SecretBytes {
        let body: Data
        do {
            body = try JSONEncoder().encode(GetKeyRequest(path: "\(namespace)/\(peerId)", purpose: "storage"))
        } catch {
            throw KeyProviderError(.dstackAnswer, "cannot encode the dstack request")
        }
        let response: HTTPConnection.Response
        do {
            let connection = try await HTTPConnection.connect(to: .unix(path: socketPath), timeout: timeout)
            defer { connection.close() }
            response = try await connection.request(.POST, "/GetKey", body: Array(body))
        } catch {
            throw KeyProviderError(.dstackUnreachable, "dstack at \(socketPath): \(error.reason)")
        }
        let (status, reply) = (response.status, response.body)
        guard status == 200 else { throw KeyProviderError(.dstackAnswer, "dstack answered HTTP \(status)") }
        guard let decoded = try? JSONDecoder().decode(GetKeyResponse.self, from: Data(reply)) else {
            throw KeyProviderError(.dstackAnswer, "dstack's answer is not the GetKey JSON")
        }
        guard let key = SecretBytes(hex: decoded.key), key.count >= 32 else {
            throw KeyProviderError(.dstackAnswer, "dstack's key is not at least 32 bytes of hex")
        }
        return key.withUnsafeBytes { SecretBytes($0.prefix(32)) }
    }

    public func checkReady() throws(KeyProviderError) {
        var status = stat()
        guard stat(socketPath, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else {
            throw KeyProviderError(.dstackUnreachable, "no dstack socket at \(socketPath)")
        }
    }
}
