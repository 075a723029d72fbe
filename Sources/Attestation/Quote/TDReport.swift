/// The TD report body of a TDX quote: what the TD measured and asked to be
/// signed.
///
/// Every field is a slice of the quote's bytes (no copies). TD 1.5 bodies add
/// ``teeTCBSVN2`` and ``mrServiceTD``; the TD 1.5 "ex" body (v5 body type 4)
/// adds service-TD and initial-state fields after them.
public struct TDReport: Sendable, Hashable {
    /// Which body layout the quote carries.
    public enum Kind: Sendable, Hashable {
        /// TD 1.0: 584 bytes (quote v4, or v5 body type 2).
        case td10
        /// TD 1.5: 648 bytes (quote v5 body type 3).
        case td15
        /// TD 1.5 with the "ex" fields: 885 bytes (quote v5 body type 4).
        case td15ex

        /// The body's length in bytes.
        public var size: Int {
            switch self {
            case .td10: 584
            case .td15: 648
            case .td15ex: 885
            }
        }
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
    /// TEE_TCB_SVN2, 16 bytes (TD 1.5 only): the TD's current TDX module,
    /// which differs from TEE_TCB_SVN after a TD-preserving module update.
    public var teeTCBSVN2: ArraySlice<UInt8>? { kind == .td10 ? nil : bytes.sub(584, 16) }
    /// MRSERVICETD, 48 bytes (TD 1.5 only).
    public var mrServiceTD: ArraySlice<UInt8>? { kind == .td10 ? nil : bytes.sub(600, 48) }

    /// TDATTRIBUTES as a little-endian integer.
    public var tdAttributesValue: UInt64 { bytes.littleEndian(UInt64.self, at: 120) }
    /// Whether the TD runs in debug mode (TDATTRIBUTES.DEBUG, bit 0).
    public var isDebug: Bool { tdAttributesValue & TDAttributes.debug != 0 }

    init(kind: Kind, bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == kind.size)
        self.kind = kind
        self.bytes = bytes
    }
}

/// The bits of TDATTRIBUTES (Intel TDX module ABI, table 3.23).
public enum TDAttributes {
    /// DEBUG: the host can read and write the TD's state and memory.
    public static let debug: UInt64 = 1 << 0
    /// The TD-under-debug profiling bits 4–6.
    public static let profiling: UInt64 = 0x70
    /// SERVTD_EXT: the TD report includes service-TD state.
    public static let serviceTDExtension: UInt64 = 1 << 17
    /// SEPT_VE_DISABLE: EPT violations are not turned into #VE inside the TD.
    public static let septVEDisable: UInt64 = 1 << 28
    /// MIGRATABLE: the TD may be migrated.
    public static let migratable: UInt64 = 1 << 29
    /// PKS: protection keys for supervisor pages (allowed).
    public static let pks: UInt64 = 1 << 30
    /// PERFMON: the TD may use performance monitoring (allowed).
    public static let perfmon: UInt64 = 1 << 63
    /// Every defined bit: 0, 4–6, 16–22, 27–31, 62, 63. The rest must be zero.
    public static let defined: UInt64 = {
        var mask: UInt64 = 0
        for bit in [0, 4, 5, 6, 62, 63] + Array(16...22) + Array(27...31) { mask |= 1 << UInt64(bit) }
        return mask
    }()
}
