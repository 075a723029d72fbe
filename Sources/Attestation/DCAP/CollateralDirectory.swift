import Foundation
import X509

extension Quote {
    /// The PCK certificate chain the quote carries, leaf first, parsed but
    /// not verified.
    public func pckCertificates() throws(AttestationError) -> [Certificate] {
        try ChainVerifier.decode(signatureData.pckChainPEM, step: .pckChain, name: "PCK").map(\.certificate)
    }

    /// The SGX extensions of the PCK leaf certificate the quote carries,
    /// without verifying anything: for choosing collateral by FMSPC before
    /// verification (which checks them).
    public func unverifiedPCKExtensions() throws(AttestationError) -> PCKExtensions {
        guard let leaf = try pckCertificates().first, let ext = leaf.extensions[oid: PCKExtensions.oid] else {
            throw AttestationError(.decodingFailed, step: .pckChain, "the PCK certificate has no SGX extension")
        }
        return try PCKExtensions(derEncoded: ext.value)
    }
}

/// Collateral documents read from a directory and indexed by the FMSPC of
/// their TCB info (upper-case hex), as the KMS loads them.
public struct CollateralDirectory: Sendable {
    /// Collateral by FMSPC.
    public let byFMSPC: [String: Collateral]
    /// Files that were not collateral, with the reason (for a warning each).
    public let skipped: [(file: String, reason: String)]

    /// Reads every `*.json` file of `directory`; files that are not
    /// collateral documents are skipped and listed in ``skipped``. When two
    /// documents have the same FMSPC, the one whose TCB info was issued
    /// later wins.
    /// - Throws: ``AttestationError`` (step ``AttestationError/Step/parseCollateral``)
    ///   if the directory cannot be listed.
    public init(directory: URL) throws(AttestationError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        } catch {
            throw AttestationError(
                .decodingFailed, step: .parseCollateral, "cannot list the collateral directory \(directory.path)")
        }
        var found: [String: (Collateral, Int64)] = [:]
        var skipped: [(String, String)] = []
        for name in names where name.hasSuffix(".json") {
            let url = directory.appendingPathComponent(name)
            do throws(AttestationError) {
                guard let data = FileManager.default.contents(atPath: url.path) else {
                    throw AttestationError(.decodingFailed, step: .parseCollateral, "unreadable")
                }
                let collateral = try Collateral(json: data)
                let info = try collateral.decoded.tcbInfo.get()
                let fmspc = info.fmspc.map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
                if let existing = found[fmspc], existing.1 >= info.issueDate { continue }
                found[fmspc] = (collateral, info.issueDate)
            } catch {
                skipped.append((name, error.reason))
            }
        }
        self.byFMSPC = found.mapValues(\.0)
        self.skipped = skipped
    }

    /// The collateral for the platform that produced `quote`.
    /// - Throws: ``AttestationError`` with code ``AttestationError/Code/mismatch``
    ///   (step ``AttestationError/Step/parseCollateral``) when none is loaded for its FMSPC.
    public func collateral(for quote: Quote) throws(AttestationError) -> Collateral {
        let fmspc = try quote.unverifiedPCKExtensions().fmspc
            .map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
        guard let collateral = byFMSPC[fmspc] else {
            throw AttestationError(.mismatch, step: .parseCollateral, "no collateral loaded for FMSPC \(fmspc)")
        }
        return collateral
    }
}
