import KeyrackCore

/// Why this node could not produce its attestation evidence (measure a
/// file, read or write the measurement cache, obtain a quote, sign). Never
/// carries key material.
public typealias NodeEvidenceError = CodedError<NodeEvidenceErrorCode>

/// The codes of ``NodeEvidenceError``.
public struct NodeEvidenceErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// A file to measure cannot be opened, examined or read.
    public static let measure = NodeEvidenceErrorCode("NODE-EVIDENCE-MEASURE")
    /// The measurement cache cannot be created, locked, encoded or written.
    public static let cache = NodeEvidenceErrorCode("NODE-EVIDENCE-CACHE")
    /// The measurements do not make a log (too many, a bad or repeated name, not a SHA-256 digest).
    public static let log = NodeEvidenceErrorCode("NODE-EVIDENCE-LOG")
    /// The root of trust cannot sign the evidence.
    public static let sign = NodeEvidenceErrorCode("NODE-EVIDENCE-SIGN")
    /// There is no TDX quote interface here: not in a TD, or configfs-tsm not mounted.
    public static let notInTD = NodeEvidenceErrorCode("NODE-EVIDENCE-NOT-IN-TD")
    /// No quote could be obtained: the software TEE cannot be opened or quote, or the TDX
    /// module's configfs-tsm interface failed or gave no quote.
    public static let quote = NodeEvidenceErrorCode("NODE-EVIDENCE-QUOTE")
}
