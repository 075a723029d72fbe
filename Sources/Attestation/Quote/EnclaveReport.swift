/// An SGX enclave report, 384 bytes: here, the quoting enclave's report that
/// the PCK key signs.
public struct EnclaveReport: Sendable, Hashable {
    /// Length in bytes.
    public static let size = 384
    /// The raw report (what the QE report signature covers).
    public let bytes: ArraySlice<UInt8>

    /// CPUSVN, 16 bytes.
    public var cpuSVN: ArraySlice<UInt8> { bytes.sub(0, 16) }
    /// MISCSELECT.
    public var miscSelect: UInt32 { bytes.littleEndian(UInt32.self, at: 16) }
    /// ATTRIBUTES, 16 bytes.
    public var attributes: ArraySlice<UInt8> { bytes.sub(48, 16) }
    /// MRENCLAVE, 32 bytes.
    public var mrEnclave: ArraySlice<UInt8> { bytes.sub(64, 32) }
    /// MRSIGNER, 32 bytes.
    public var mrSigner: ArraySlice<UInt8> { bytes.sub(128, 32) }
    /// ISVPRODID.
    public var isvProdID: UInt16 { bytes.littleEndian(UInt16.self, at: 256) }
    /// ISVSVN.
    public var isvSVN: UInt16 { bytes.littleEndian(UInt16.self, at: 258) }
    /// REPORTDATA, 64 bytes.
    public var reportData: ArraySlice<UInt8> { bytes.sub(320, 64) }

    init(bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == Self.size)
        self.bytes = bytes
    }
}

/// The quote's signature data: the quote signature, the attestation key, and
/// the certification data that vouches for that key (QE report, its
/// signature, QE auth data and the PCK chain).
public struct QuoteSignatureData: Sendable, Hashable {
    /// ECDSA P-256 signature over the signed part of the quote, `r || s`.
    public let signature: ArraySlice<UInt8>
    /// The attestation public key, `x || y`.
    public let attestationKey: ArraySlice<UInt8>
    /// The quoting enclave's report.
    public let qeReport: EnclaveReport
    /// The PCK leaf key's signature over ``qeReport``, `r || s`.
    public let qeReportSignature: ArraySlice<UInt8>
    /// QE authentication data (hashed with the attestation key into the QE report).
    public let qeAuthData: ArraySlice<UInt8>
    /// The PCK certificate chain as carried (PEM, possibly NUL-terminated).
    public let pckChainPEM: ArraySlice<UInt8>

    /// Certification data type holding the QE report.
    public static let certificationTypeQEReport: UInt16 = 6
    /// Certification data type holding the PCK chain as PEM.
    public static let certificationTypePCKChain: UInt16 = 5

    init(reading reader: inout ByteReader) throws(AttestationError) {
        signature = try reader.take(64, "signature_data.signature")
        attestationKey = try reader.take(64, "signature_data.attestation_key")
        let type = try reader.u16("certification_data.type")
        guard type == Self.certificationTypeQEReport else {
            throw AttestationError(
                .unsupported, step: .parseQuote,
                "certification data type \(type), expected \(Self.certificationTypeQEReport) (QE report)")
        }
        let size = Int(try reader.u32("certification_data.size"))
        guard size <= reader.remaining else {
            throw AttestationError(
                .truncated, step: .parseQuote,
                "certification data size \(size) runs past the \(reader.remaining) bytes left in the signature data")
        }
        // Bytes after the type-6 certification data, or after the PCK chain
        // inside it, are ignored, as both references do.
        reader.limit(to: size)
        qeReport = EnclaveReport(bytes: try reader.take(EnclaveReport.size, "qe_report"))
        qeReportSignature = try reader.take(64, "qe_report_signature")
        let authLength = Int(try reader.u16("qe_auth_data.length"))
        qeAuthData = try reader.take(authLength, "qe_auth_data")
        let innerType = try reader.u16("pck_certification_data.type")
        guard innerType == Self.certificationTypePCKChain else {
            throw AttestationError(
                .unsupported, step: .parseQuote,
                "nested certification data type \(innerType), expected \(Self.certificationTypePCKChain) (PCK chain)")
        }
        let innerSize = Int(try reader.u32("pck_certification_data.size"))
        pckChainPEM = try reader.take(innerSize, "pck_certification_data")
    }
}
