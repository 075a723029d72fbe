import Attestation
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where a node running in a TD gets a TDX quote over 64 bytes of report
/// data: ``SoftwareTEEQuoteProvider`` (the directory of `keyrack tee init`,
/// for machines without TDX) or ``ConfigfsTSMQuoteProvider`` (a real TD).
public protocol TDXQuoteProvider: Sendable {
    /// A quote whose report data is `reportData` (64 bytes).
    func quote(reportData: [UInt8]) async throws(NodeEvidenceError) -> [UInt8]
}

/// Quotes from a software TEE: real v4 quote bytes under its test PKI. A
/// peer accepts them only when its policy's trust anchor is that TEE's
/// `root.der`.
public struct SoftwareTEEQuoteProvider: TDXQuoteProvider, CustomStringConvertible {
    let tee: SoftwareTEE
    let measurements: TDMeasurements?

    /// Opens the software TEE in `directory`.
    public init(directory: URL) throws(NodeEvidenceError) {
        do {
            tee = try SoftwareTEE(directory: directory)
        } catch {
            throw NodeEvidenceError(.quote, "software TEE at \(directory.path): \(error)")
        }
        measurements = nil
    }

    /// Quotes from an opened software TEE, with `measurements` instead of
    /// its default ones if given (to play a TD running other software).
    public init(tee: SoftwareTEE, measurements: TDMeasurements? = nil) {
        self.tee = tee
        self.measurements = measurements
    }

    /// The TEE's directory; never its keys.
    public var description: String { "the software TEE in \(tee.directory.path)" }

    public func quote(reportData: [UInt8]) throws(NodeEvidenceError) -> [UInt8] {
        do {
            return try tee.quote(
                reportData: reportData, mrTD: measurements?.mrTD, rtmrs: measurements?.rtmrs ?? [nil, nil, nil, nil])
        } catch {
            throw NodeEvidenceError(.quote, "software TEE: \(error.description)")
        }
    }
}

/// Quotes from the TDX module through Linux configfs-tsm: a fresh entry
/// under `root`, report data written to its `inblob`, the quote read from
/// its `outblob`, the entry removed.
public struct ConfigfsTSMQuoteProvider: TDXQuoteProvider, CustomStringConvertible {
    /// The configfs-tsm report directory.
    public let root: String

    /// Quotes through `root` (`/sys/kernel/config/tsm/report` by default).
    public init(root: String = "/sys/kernel/config/tsm/report") { self.root = root }

    /// The interface's directory.
    public var description: String { "configfs-tsm at \(root)" }

    public func quote(reportData: [UInt8]) throws(NodeEvidenceError) -> [UInt8] {
        let entry = "\(root)/keyrack-node-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        guard mkdir(entry, 0o700) == 0 else {
            throw errno == ENOENT
                ? NodeEvidenceError(
                    .notInTD, "no TDX quote interface at \(root): not running in a TD (or configfs-tsm not mounted)")
                : NodeEvidenceError(.quote, "cannot create \(entry): errno \(errno)")
        }
        defer { rmdir(entry) }
        // configfs attributes are written in place (no temporary file and rename).
        let inblob = Glibc.open("\(entry)/inblob", O_WRONLY | O_CLOEXEC)
        guard inblob >= 0 else { throw NodeEvidenceError(.quote, "cannot open \(entry)/inblob: errno \(errno)") }
        let written = reportData.withUnsafeBytes { Glibc.write(inblob, $0.baseAddress, $0.count) }
        close(inblob)
        guard written == reportData.count else {
            throw NodeEvidenceError(.quote, "cannot write the report data to \(entry)/inblob")
        }
        guard let quote = FileManager.default.contents(atPath: "\(entry)/outblob"), !quote.isEmpty else {
            throw NodeEvidenceError(.quote, "the TDX module returned no quote in \(entry)/outblob")
        }
        return Array(quote)
    }
}
