import KeyrackCore

/// Why no key could be derived. The KMS answers `502 KeyDerivationFailed`.
/// Never contains key material.
public typealias KeyProviderError = CodedError<KeyProviderErrorCode>

/// The codes of ``KeyProviderError``.
public struct KeyProviderErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The local key root (`KEY_ROOT_FILE`) cannot be used: unreadable,
    /// not 32 bytes, readable by group or others, or not writable when created.
    public static let keyRoot = KeyProviderErrorCode("KMS-KEY-ROOT")
    /// `KEY_ROOT_FILE` does not exist: the KMS never creates one (`keyrack kms init-root` does).
    public static let keyRootMissing = KeyProviderErrorCode("KMS-KEY-ROOT-MISSING")
    /// `keyrack kms init-root --out F` where F exists: a key root is never overwritten.
    public static let keyRootExists = KeyProviderErrorCode("KMS-KEY-ROOT-EXISTS")
    /// dstack's guest agent cannot be reached (no socket, connection refused, timeout).
    public static let dstackUnreachable = KeyProviderErrorCode("KMS-DSTACK-UNREACHABLE")
    /// dstack answered, but not with a key (an HTTP error, not the GetKey JSON, a short key).
    public static let dstackAnswer = KeyProviderErrorCode("KMS-DSTACK-ANSWER")
}

/// Why a quote was refused (`401 InvalidQuote`), or why quotes cannot be
/// verified yet (no collateral). Never carries quote bytes.
public typealias EvidenceFailure = CodedError<EvidenceFailureCode>

/// The codes of ``EvidenceFailure``.
public struct EvidenceFailureCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The bytes are not a TDX quote this verifier reads.
    public static let malformed = EvidenceFailureCode("KMS-QUOTE-MALFORMED")
    /// DCAP verification refused the quote (signatures, chains, collateral, TCB, TD attributes).
    public static let unverified = EvidenceFailureCode("KMS-QUOTE-UNVERIFIED")
    /// There is no usable collateral (`COLLATERAL_DIR` empty, unreadable or not configured).
    public static let collateral = EvidenceFailureCode("KMS-COLLATERAL")
}
