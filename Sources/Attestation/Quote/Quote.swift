/// A parsed TDX quote, version 4 or 5.
///
/// Parsing checks every length against what is left and refuses anything that
/// is not a TDX quote; it verifies nothing cryptographic (that is
/// ``QuoteVerifier``'s job). All fields are slices of ``bytes``.
///
/// ```swift
/// let quote = try Quote(bytes: data)
/// print(quote.report.mrTD.hexString)
/// ```
public struct Quote: Sendable, Hashable {
    /// The quote as received, trailing padding included.
    public let bytes: [UInt8]
    /// The header.
    public let header: QuoteHeader
    /// The v5 body type (2 = TD 1.0, 3 = TD 1.5, 4 = TD 1.5 with the "ex" fields); `nil` for v4.
    public let bodyType: UInt16?
    /// The TD report body.
    public let report: TDReport
    /// The signature data.
    public let signatureData: QuoteSignatureData
    /// Length of the prefix the quote signature covers: header ‖ (v5 type and
    /// size) ‖ body.
    public let signedLength: Int
    /// Number of bytes after the signature data (real quotes carry zero
    /// padding; like both references, any trailing bytes are tolerated).
    public let paddingLength: Int

    /// The bytes the attestation key signed.
    public var signedBytes: ArraySlice<UInt8> { bytes[0..<signedLength] }

    /// Parses `bytes` as a TDX quote.
    /// - Throws: ``AttestationError`` with step ``AttestationError/Step/parseQuote``:
    ///   ``AttestationError/Code/notTDXQuote`` for SGX and other TEEs,
    ///   ``AttestationError/Code/truncated`` when a length runs past the end,
    ///   ``AttestationError/Code/unsupported`` or ``AttestationError/Code/malformed`` otherwise.
    public init(bytes: [UInt8]) throws(AttestationError) {
        var reader = ByteReader(bytes)
        let header = try QuoteHeader(reading: &reader)
        guard header.teeType == QuoteHeader.teeTypeTDX else {
            let kind = header.teeType == QuoteHeader.teeTypeSGX ? " (SGX)" : ""
            throw AttestationError(
                .notTDXQuote, step: .parseQuote,
                "not a TDX quote: TEE type 0x\(String(header.teeType, radix: 16))\(kind), quote version \(header.version)"
            )
        }
        guard header.version == 4 || header.version == 5 else {
            throw AttestationError(
                .unsupported, step: .parseQuote, "TDX quote version \(header.version) is not supported (4 or 5 are)")
        }
        guard header.attestationKeyType == QuoteHeader.attestationKeyTypeECDSAP256 else {
            throw AttestationError(
                .unsupported, step: .parseQuote,
                "attestation key type \(header.attestationKeyType) is not supported (2, ECDSA P-256, is)")
        }
        var kind = TDReport.Kind.td10
        var bodyType: UInt16? = nil
        if header.version == 5 {
            let type = try reader.u16("body.type")
            let size = Int(try reader.u32("body.size"))
            switch type {
            case 2: kind = .td10
            case 3: kind = .td15
            case 4: kind = .td15ex
            case 1:
                throw AttestationError(
                    .notTDXQuote, step: .parseQuote, "not a TDX quote: v5 body type 1 (SGX enclave report)")
            default:
                throw AttestationError(
                    .unsupported, step: .parseQuote, "v5 body type \(type) is not supported (2, 3 or 4 are)")
            }
            guard size == kind.size else {
                throw AttestationError(
                    .malformed, step: .parseQuote,
                    "v5 body size \(size) does not match body type \(type) (\(kind.size))")
            }
            bodyType = type
        }
        let report = TDReport(kind: kind, bytes: try reader.take(kind.size, "td_report"))
        let signedLength = reader.offset
        let signatureLength = Int(try reader.u32("signature_data.length"))
        guard signatureLength <= reader.remaining else {
            throw AttestationError(
                .truncated, step: .parseQuote,
                "signature data length \(signatureLength) runs past the end (\(reader.remaining) bytes left)")
        }
        var inner = ByteReader(bytes, range: reader.offset..<(reader.offset + signatureLength))
        let signatureData = try QuoteSignatureData(reading: &inner)
        let paddingStart = reader.offset + signatureLength
        self.bytes = bytes
        self.header = header
        self.bodyType = bodyType
        self.report = report
        self.signatureData = signatureData
        self.signedLength = signedLength
        self.paddingLength = bytes.count - paddingStart
    }
}
