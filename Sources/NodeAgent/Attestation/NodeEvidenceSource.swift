import Foundation

/// Where this node's attestation evidence comes from: its software root of
/// trust (a measurement log it signs) or, in a TD, TDX quotes.
public struct NodeEvidenceSource: Sendable, CustomStringConvertible {
    enum Source: Sendable {
        case softwareRootOfTrust(files: [MeasuredFile], cache: MeasurementCache)
        case tdxQuote(any TDXQuoteProvider)
    }

    let source: Source

    /// A measurement log of `files` (at least the executable) signed by the
    /// root of trust; digests are cached in `measurementCacheDirectory`
    /// (see ``MeasurementCache``).
    public static func softwareRootOfTrust(
        measurementCacheDirectory: URL,
        files: [MeasuredFile] = [.executable]
    ) -> NodeEvidenceSource {
        NodeEvidenceSource(
            source: .softwareRootOfTrust(files: files, cache: MeasurementCache(directory: measurementCacheDirectory)))
    }

    /// TDX quotes from `provider`, with report data = binding ‖ 32 zero bytes.
    public static func tdxQuote(_ provider: any TDXQuoteProvider) -> NodeEvidenceSource {
        NodeEvidenceSource(source: .tdxQuote(provider))
    }

    /// The kind of evidence it produces.
    public var kind: EvidenceKind {
        switch source {
        case .softwareRootOfTrust: return .softwareRootOfTrust
        case .tdxQuote: return .tdxQuote
        }
    }

    /// Measures the software root of trust's files now and returns the log
    /// (`nil` for TDX quotes).
    func prepare() throws(NodeEvidenceError) -> MeasurementLog? {
        guard case .softwareRootOfTrust(let files, let cache) = source else { return nil }
        return try MeasurementLog.measure(files, cache: cache)
    }

    /// The kind and where it comes from; never key material.
    public var description: String {
        switch source {
        case .softwareRootOfTrust(let files, _):
            return "software root of trust measuring \(files.map(\.name).joined(separator: ", "))"
        case .tdxQuote(let provider):
            return "TDX quotes from \(provider)"
        }
    }

    /// Evidence whose report data is `binding`.
    func evidence(binding: [UInt8], rootOfTrust: any RootOfTrust) async throws(NodeEvidenceError) -> NodeEvidence {
        switch source {
        case .softwareRootOfTrust(let files, let cache):
            let log = try MeasurementLog.measure(files, cache: cache)
            let signature: [UInt8]
            do {
                signature = try rootOfTrust.signMeasurements(log, reportData: binding)
            } catch {
                throw NodeEvidenceError(.sign, "the root of trust could not sign the evidence: \(error.reason)")
            }
            return .softwareRootOfTrust(SoftwareEvidence(reportData: binding, log: log, signature: signature))
        case .tdxQuote(let provider):
            return .tdxQuote(try await provider.quote(reportData: NodeEvidence.tdxReportData(binding: binding)))
        }
    }
}
