/// The 48-byte quote header.
public struct QuoteHeader: Sendable, Hashable {
    /// Quote format version: 4 or 5 for the TDX quotes we accept.
    public let version: UInt16
    /// Attestation key type: 2 is ECDSA P-256.
    public let attestationKeyType: UInt16
    /// TEE type: `0x81` for TDX, `0x00` for SGX.
    public let teeType: UInt32
    /// The quoting enclave's security version (the header's first SVN field).
    public let qeSVN: UInt16
    /// The provisioning certification enclave's security version.
    public let pceSVN: UInt16
    /// The QE vendor id, 16 bytes (Intel's is ``QuoteHeader/intelQEVendorID``).
    public let qeVendorID: ArraySlice<UInt8>
    /// Free-form user data, 20 bytes.
    public let userData: ArraySlice<UInt8>

    /// Length of the header in bytes.
    public static let size = 48
    /// TEE type of TDX quotes.
    public static let teeTypeTDX: UInt32 = 0x81
    /// TEE type of SGX quotes.
    public static let teeTypeSGX: UInt32 = 0x00
    /// Attestation key type ECDSA-256-with-P-256.
    public static let attestationKeyTypeECDSAP256: UInt16 = 2
    /// Intel's QE vendor id.
    public static let intelQEVendorID: [UInt8] = [
        0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
    ]

    init(reading reader: inout ByteReader) throws(AttestationError) {
        version = try reader.u16("header.version")
        attestationKeyType = try reader.u16("header.attestation_key_type")
        teeType = try reader.u32("header.tee_type")
        qeSVN = try reader.u16("header.qe_svn")
        pceSVN = try reader.u16("header.pce_svn")
        qeVendorID = try reader.take(16, "header.qe_vendor_id")
        userData = try reader.take(20, "header.user_data")
    }
}
