/// A refusal by the KMS: an HTTP status, a stable code, a human message
/// and, for policy violations, the field that failed. Never carries a
/// nonce, key, quote or signature.
public struct KMSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The stable error codes of the API.
    public enum Code: String, Sendable, CaseIterable {
        case invalidRequest = "InvalidRequest"
        case payloadTooLarge = "PayloadTooLarge"
        case invalidPeerId = "InvalidPeerId"
        case invalidChallenge = "InvalidChallenge"
        case invalidSignature = "InvalidSignature"
        case invalidQuote = "InvalidQuote"
        case policyViolation = "PolicyViolation"
        case rateLimited = "RateLimited"
        case keyDerivationFailed = "KeyDerivationFailed"
        case policyNotReady = "PolicyNotReady"
        case storeUnavailable = "StoreUnavailable"

        /// The HTTP status that goes with the code.
        public var status: Int {
            switch self {
            case .invalidRequest, .invalidPeerId, .invalidChallenge: return 400
            case .payloadTooLarge: return 413
            case .invalidSignature, .invalidQuote: return 401
            case .policyViolation: return 403
            case .rateLimited: return 429
            case .keyDerivationFailed: return 502
            case .policyNotReady, .storeUnavailable: return 503
            }
        }
    }

    /// The code.
    public let code: Code
    /// What went wrong, for a person.
    public let message: String
    /// The policy field that failed (`PolicyViolation` only).
    public let field: String?
    /// Seconds to wait before retrying (`RateLimited` only).
    public let retryAfterSeconds: Int?
    /// What only the operator may read — a file path, a Redis host and port,
    /// a PCCS URL, a provider's own error — for the log; never in the answer.
    public let detail: String?

    /// An error with its code and message.
    public init(
        _ code: Code, _ message: String, field: String? = nil, retryAfterSeconds: Int? = nil, detail: String? = nil
    ) {
        self.code = code
        self.message = message
        self.field = field
        self.retryAfterSeconds = retryAfterSeconds
        self.detail = detail
    }

    /// The HTTP status.
    public var status: Int { code.status }

    public var description: String { "\(code.rawValue): \(message)" + (field.map { " (field \($0))" } ?? "") }

    /// The JSON body `{"error", "message"[, "field"]}`.
    public var body: ErrorBody { ErrorBody(error: code.rawValue, message: message, field: field) }
}

/// The JSON body of every non-2xx answer.
public struct ErrorBody: Codable, Equatable, Sendable {
    public let error: String
    public let message: String
    public let field: String?

    package init(error: String, message: String, field: String?) {
        self.error = error
        self.message = message
        self.field = field
    }
}
