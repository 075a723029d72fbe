/// Why this node could not produce its attestation evidence (measure a
/// file, read or write the measurement cache, obtain a quote, sign).
public struct NodeEvidenceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong; never key material.
    public let reason: String
    /// An error with its reason.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
