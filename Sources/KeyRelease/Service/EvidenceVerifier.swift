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

    /// Why quotes cannot be verified at `now` (no collateral loaded, or all
    /// of it expired), or nil if they can.
    func notReadyReason(now: Date) -> String?

    /// Gets ready to verify `quote` at `now` (fetching its platform's
    /// collateral if needed), before any challenge is spent: why it cannot
    /// be verified now (missing or expired collateral), or nil.
    func prepare(quote: [UInt8], now: Date) async -> String?

    /// Collateral fetches from a PCCS and how many failed, for `/metrics`; nil without a PCCS.
    func pccsCounts() -> (fetches: Int, failures: Int)?
}

extension EvidenceVerifier {
    /// Nothing to prepare.
    public func prepare(quote: [UInt8], now: Date) async -> String? { nil }
    /// No PCCS.
    public func pccsCounts() -> (fetches: Int, failures: Int)? { nil }
}
