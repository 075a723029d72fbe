import Foundation

/// `POST /challenge` request.
public struct ChallengeRequest: Codable, Sendable {
    /// The libp2p peer id (base58btc, Ed25519).
    public let peerId: String
    public init(peerId: String) { self.peerId = peerId }
}

/// `POST /challenge` answer.
public struct ChallengeResponse: Codable, Sendable, Equatable {
    /// UUID v4, lower case.
    public let challengeId: String
    /// 32 bytes, hex.
    public let nonce: String
    /// RFC 3339.
    public let expiresAt: String
}

/// `POST /get-key` request.
public struct GetKeyRequest: Codable, Sendable {
    public let challengeId: String
    /// The TDX quote, base64.
    public let quote: String
    /// Ed25519 signature over the 32 raw nonce bytes, base64.
    public let signature: String
    public init(challengeId: String, quote: String, signature: String) {
        self.challengeId = challengeId
        self.quote = quote
        self.signature = signature
    }
}

/// `POST /get-key` answer.
public struct GetKeyResponse: Codable, Sendable {
    /// 32 bytes, base64.
    public let key: String
}
