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

/// Why no quote could be produced.
public typealias QuoteSourceError = CodedError<QuoteSourceErrorCode>

/// The codes of ``QuoteSourceError``.
public struct QuoteSourceErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// dstack's guest agent cannot be reached.
    public static let dstackUnreachable = QuoteSourceErrorCode("QUOTE-DSTACK-UNREACHABLE")
    /// dstack answered, but not with a quote.
    public static let dstackAnswer = QuoteSourceErrorCode("QUOTE-DSTACK-ANSWER")
    /// No TDX quote interface here (not in a TD, or configfs-tsm not mounted).
    public static let notInTD = QuoteSourceErrorCode("QUOTE-NOT-IN-TD")
    /// The TDX module's configfs-tsm interface failed or gave an empty quote.
    public static let tdxModule = QuoteSourceErrorCode("QUOTE-TDX-MODULE")
    /// The software TEE's directory cannot be opened or its quote made.
    public static let softwareTEE = QuoteSourceErrorCode("QUOTE-SOFTWARE-TEE")
}

/// An identity file that could not be written or read.
public typealias IdentityError = CodedError<IdentityErrorCode>

/// The codes of ``IdentityError``.
public struct IdentityErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The file exists already; an identity is never overwritten.
    public static let exists = IdentityErrorCode("PEER-IDENTITY-EXISTS")
    /// The file cannot be created, opened, read or written.
    public static let io = IdentityErrorCode("PEER-IDENTITY-IO")
    /// The file is readable by group or others.
    public static let permissions = IdentityErrorCode("PEER-IDENTITY-PERMISSIONS")
    /// The file is not a libp2p Ed25519 private key, or is corrupt.
    public static let format = IdentityErrorCode("PEER-IDENTITY-FORMAT")
}
