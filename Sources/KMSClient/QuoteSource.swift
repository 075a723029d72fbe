import Attestation
import Foundation
import KeyRelease
import KeyrackCore

/// Where a node gets a TDX quote over 64 bytes of report data.
public protocol QuoteSource: Sendable {
    /// A quote whose report data is `reportData` (64 bytes).
    func quote(reportData: [UInt8]) async throws(QuoteSourceError) -> [UInt8]
}

/// Quotes from the dstack guest agent: `POST /GetQuote {"report_data": hex}`
/// answers `{"quote": hex, "event_log": …}`.
public struct DstackQuoteSource: QuoteSource {
    public let socketPath: String
    public init(socketPath: String = "/var/run/dstack.sock") { self.socketPath = socketPath }

    public func quote(reportData: [UInt8]) async throws(QuoteSourceError) -> [UInt8] {
        let body = Array("{\"report_data\":\"\(reportData.hexString)\"}".utf8)
        let response: HTTPConnection.Response
        do {
            let connection = try await HTTPConnection.connect(to: .unix(path: socketPath))
            defer { connection.close() }
            response = try await connection.request(.POST, "/GetQuote", body: body)
        } catch {
            throw QuoteSourceError(.dstackUnreachable, "dstack at \(socketPath): \(error.reason)")
        }
        guard response.status == 200 else {
            throw QuoteSourceError(.dstackAnswer, "dstack answered HTTP \(response.status)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
            let hex = object["quote"] as? String, let quote = [UInt8](hex: hex), !quote.isEmpty
        else { throw QuoteSourceError(.dstackAnswer, "dstack's answer is not the GetQuote JSON") }
        return quote
    }
}

/// Quotes from the TDX module through the Linux configfs-tsm interface
/// (`/sys/kernel/config/tsm/report`): write `inblob`, read `outblob`.
public struct ConfigfsTSMQuoteSource: QuoteSource {
    public let root: String
    public init(root: String = "/sys/kernel/config/tsm/report") { self.root = root }

    public func quote(reportData: [UInt8]) async throws(QuoteSourceError) -> [UInt8] {
        let manager = FileManager.default
        guard manager.fileExists(atPath: root) else {
            throw QuoteSourceError(
                .notInTD, "no TDX quote interface at \(root): not running in a TD (or configfs-tsm not mounted)")
        }
        let entry = "\(root)/keyrack-\(UUID().uuidString)"
        do {
            try manager.createDirectory(atPath: entry, withIntermediateDirectories: false)
            defer { try? manager.removeItem(atPath: entry) }
            try Data(reportData).write(to: URL(fileURLWithPath: "\(entry)/inblob"))
            let quote = try Data(contentsOf: URL(fileURLWithPath: "\(entry)/outblob"))
            guard !quote.isEmpty else { throw QuoteSourceError(.tdxModule, "the TDX module returned an empty quote") }
            return Array(quote)
        } catch let error as QuoteSourceError {
            throw error
        } catch {
            throw QuoteSourceError(.tdxModule, "configfs-tsm quote failed: \(error.localizedDescription)")
        }
    }
}

/// Quotes from a software TEE directory (`keyrack tee init`): real v4 quote
/// bytes under a test PKI, for machines without TDX. A KMS accepts them only
/// when its trust anchor is that directory's `root.der`.
public struct SoftwareTEEQuoteSource: QuoteSource {
    let tee: SoftwareTEE

    /// Opens the software TEE in `directory`.
    public init(directory: URL) throws(QuoteSourceError) {
        do {
            tee = try SoftwareTEE(directory: directory)
        } catch {
            throw QuoteSourceError(.softwareTEE, "software TEE at \(directory.path): \(error)")
        }
    }

    /// A source over an already opened software TEE.
    public init(tee: SoftwareTEE) { self.tee = tee }

    public func quote(reportData: [UInt8]) throws(QuoteSourceError) -> [UInt8] {
        do {
            return try tee.quote(reportData: reportData)
        } catch {
            throw QuoteSourceError(.softwareTEE, "software TEE: \(error.description)")
        }
    }
}
