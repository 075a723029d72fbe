import Attestation
import Crypto
import Foundation
import Synchronization

/// The production quote checks: TDX quote parsing and DCAP verification from
/// the `Attestation` module, with collateral read once from `COLLATERAL_DIR`
/// and verified results cached by the verifier.
public struct TDXEvidenceVerifier: EvidenceVerifier {
    public typealias Parsed = Quote

    let verifier: QuoteVerifier
    let collateral: Result<CollateralDirectory, EvidenceFailure>
    /// Which collateral a PCK chain needs, by the chain's SHA-256: finding
    /// the FMSPC means decoding the PCK certificate, which a platform seen
    /// before should not pay again. The chain fixes the FMSPC, so the entry
    /// never goes stale; the table is emptied when it grows past 4,096.
    private let collateralByChain = CollateralLookupCache()

    /// A verifier under `trustAnchor` with the collateral of `collateralDirectory`.
    public init(trustAnchor: TrustAnchor = .intelSGXRootCA, collateralDirectory: URL?) {
        verifier = QuoteVerifier(trustAnchor: trustAnchor)
        guard let collateralDirectory else {
            collateral = .failure(EvidenceFailure("no COLLATERAL_DIR configured"))
            return
        }
        do {
            let directory = try CollateralDirectory(directory: collateralDirectory)
            collateral =
                directory.byFMSPC.isEmpty
                ? .failure(EvidenceFailure("no collateral document in \(collateralDirectory.path)"))
                : .success(directory)
        } catch {
            collateral = .failure(EvidenceFailure(error.reason))
        }
    }

    /// Files of the collateral directory that were skipped, with the reason
    /// (logged as warnings at start-up).
    public var skippedCollateralFiles: [(file: String, reason: String)] {
        (try? collateral.get().skipped) ?? []
    }

    public func parse(quote: [UInt8]) throws(EvidenceFailure) -> Quote {
        do {
            return try Quote(bytes: quote)
        } catch {
            throw EvidenceFailure(error.description)
        }
    }

    public func reportData(of quote: Quote) -> [UInt8] { Array(quote.report.reportData) }

    public func verify(_ quote: Quote, now: Date) throws(EvidenceFailure) -> MeasuredState {
        let directory = try collateral.get()
        do {
            let chainDigest = Array(SHA256.hash(data: quote.signatureData.pckChainPEM))
            let platformCollateral: Collateral
            if let known = collateralByChain.lookup(chainDigest) {
                platformCollateral = known
            } else {
                platformCollateral = try directory.collateral(for: quote)
                collateralByChain.store(platformCollateral, for: chainDigest)
            }
            let verified = try verifier.verify(
                quote: quote,
                collateral: platformCollateral,
                now: Int64(now.timeIntervalSince1970)
            )
            return MeasuredState(
                mrtd: Array(verified.report.mrTD),
                rtmrs: verified.report.rtmrs.map(Array.init),
                tcbStatus: verified.status.rawValue
            )
        } catch {
            throw EvidenceFailure(error.description)
        }
    }

    public func notReadyReason() -> String? {
        if case .failure(let failure) = collateral { return failure.reason }
        return nil
    }
}

/// A bounded map from PCK chain digests to collateral.
final class CollateralLookupCache: Sendable {
    private let table = Mutex([[UInt8]: Collateral]())

    func lookup(_ digest: [UInt8]) -> Collateral? { table.withLock { $0[digest] } }

    func store(_ collateral: Collateral, for digest: [UInt8]) {
        table.withLock { table in
            if table.count >= 4096 { table.removeAll() }
            table[digest] = collateral
        }
    }
}
