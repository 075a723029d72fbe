/// The TD report body of a TDX quote: what the TD measured and asked to be
/// signed.
///
/// Every field is a slice of the quote's bytes (no copies). TD 1.5 bodies add
/// ``teeTCBSVN2`` and ``mrServiceTD``.
public struct TDReport: Sendable, Hashable {
    /// Which body layout the quote carries.
    public enum Kind: Sendable, Hashable {
        /// TD 1.0: 584 bytes (quote v4, or v5 body type 2).
        case td10
        /// TD 1.5: 648 bytes (quote v5 body type 3).
        case td15

        /// The body's length in bytes.
        public var size: Int { self == .td10 ? 584 : 648 }
    }

    /// The body layout.
    public let kind: Kind
    /// The whole body (what the quote signature covers after the header).
    public let bytes: ArraySlice<UInt8>

    /// TEE_TCB_SVN, 16 bytes: the TDX module's security versions.
    public var teeTCBSVN: ArraySlice<UInt8> { bytes.sub(0, 16) }
    /// MRSEAM, 48 bytes: the TDX module's measurement.
    public var mrSeam: ArraySlice<UInt8> { bytes.sub(16, 48) }
    /// MRSIGNERSEAM, 48 bytes: the TDX module's signer.
    public var mrSignerSeam: ArraySlice<UInt8> { bytes.sub(64, 48) }
    /// SEAMATTRIBUTES, 8 bytes.
    public var seamAttributes: ArraySlice<UInt8> { bytes.sub(112, 8) }
    /// TDATTRIBUTES, 8 bytes.
    public var tdAttributes: ArraySlice<UInt8> { bytes.sub(120, 8) }
    /// XFAM, 8 bytes.
    public var xfam: ArraySlice<UInt8> { bytes.sub(128, 8) }
    /// MRTD, 48 bytes: the measurement of the TD's initial contents.
    public var mrTD: ArraySlice<UInt8> { bytes.sub(136, 48) }
    /// MRCONFIGID, 48 bytes.
    public var mrConfigID: ArraySlice<UInt8> { bytes.sub(184, 48) }
    /// MROWNER, 48 bytes.
    public var mrOwner: ArraySlice<UInt8> { bytes.sub(232, 48) }
    /// MROWNERCONFIG, 48 bytes.
    public var mrOwnerConfig: ArraySlice<UInt8> { bytes.sub(280, 48) }
    /// RTMR0, 48 bytes.
    public var rtmr0: ArraySlice<UInt8> { bytes.sub(328, 48) }
    /// RTMR1, 48 bytes.
    public var rtmr1: ArraySlice<UInt8> { bytes.sub(376, 48) }
    /// RTMR2, 48 bytes.
    public var rtmr2: ArraySlice<UInt8> { bytes.sub(424, 48) }
    /// RTMR3, 48 bytes.
    public var rtmr3: ArraySlice<UInt8> { bytes.sub(472, 48) }
    /// RTMR0–3 in order.
    public var rtmrs: [ArraySlice<UInt8>] { [rtmr0, rtmr1, rtmr2, rtmr3] }
    /// REPORTDATA, 64 bytes: what the TD bound into the quote (the KMS expects
    /// `nonce || SHA-256(peerId)`).
    public var reportData: ArraySlice<UInt8> { bytes.sub(520, 64) }
    /// TEE_TCB_SVN2, 16 bytes (TD 1.5 only).
    public var teeTCBSVN2: ArraySlice<UInt8>? { kind == .td15 ? bytes.sub(584, 16) : nil }
    /// MRSERVICETD, 48 bytes (TD 1.5 only).
    public var mrServiceTD: ArraySlice<UInt8>? { kind == .td15 ? bytes.sub(600, 48) : nil }

    /// TDATTRIBUTES as a little-endian integer.
    public var tdAttributesValue: UInt64 { bytes.littleEndian(UInt64.self, at: 120) }
    /// Whether the TD runs in debug mode (TDATTRIBUTES.DEBUG, bit 0; any of
    /// the TD-under-debug bits 0–7 counts).
    public var isDebug: Bool { tdAttributesValue & 0xFF != 0 }

    init(kind: Kind, bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == kind.size)
        self.kind = kind
        self.bytes = bytes
    }
}
