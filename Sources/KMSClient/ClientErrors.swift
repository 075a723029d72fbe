import KeyRelease
import KeyrackCore

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
