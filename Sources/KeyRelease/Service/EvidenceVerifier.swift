import Attestation
import Foundation

/// The quote checks of the key-release pipeline: parse (step 3), expose the
/// report data for the binding check (step 4), verify with DCAP (step 5).
/// ``TDXEvidenceVerifier`` is the production implementation.
public protocol EvidenceVerifier: Sendable {
    /// A parsed quote.
    associatedtype Parsed: Sendable

    /// Parses a quote; a malformed or non-TDX quote fails with the reason.
    func parse(quote: [UInt8]) throws(EvidenceFailure) -> Parsed

    /// The 64 bytes of report data the quote carries.
    func reportData(of quote: Parsed) -> [UInt8]

    /// Verifies the quote (signatures, certificate chain, collateral, TCB
    /// status) at `now` and returns what the policy looks at.
    func verify(_ quote: Parsed, now: Date) throws(EvidenceFailure) -> MeasuredState

    /// Why quotes cannot be verified right now (no collateral loaded), or
    /// nil if they can.
    func notReadyReason() -> String?
}

/// Why a quote was refused (`401 InvalidQuote`).
public struct EvidenceFailure: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason, without quote bytes.
    public let reason: String
    /// A failure with a reason.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
