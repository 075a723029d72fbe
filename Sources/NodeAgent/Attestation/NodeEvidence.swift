/// The evidence one node shows another, as carried in an evidence frame.
enum NodeEvidence: Sendable, Hashable {
    /// A measurement log signed by the software root of trust.
    case softwareRootOfTrust(SoftwareEvidence)
    /// A TDX quote whose report data is the binding followed by 32 zero bytes.
    case tdxQuote([UInt8])

    var kind: EvidenceKind {
        switch self {
        case .softwareRootOfTrust: return .softwareRootOfTrust
        case .tdxQuote: return .tdxQuote
        }
    }

    /// A TDX quote's 64 bytes of report data for `binding`.
    static func tdxReportData(binding: [UInt8]) -> [UInt8] { binding + [UInt8](repeating: 0, count: 32) }
}

/// Software root-of-trust evidence: the report data (the channel binding),
/// the measurement log, and the device key's signature over both.
struct SoftwareEvidence: Sendable, Hashable {
    /// The channel binding, 32 bytes.
    let reportData: [UInt8]
    let log: MeasurementLog
    /// Ed25519 (64 bytes) or RSA-PSS SHA-256 by the device key.
    let signature: [UInt8]

    static let label = "keyrack software root of trust evidence v1"

    /// What the device key signs:
    /// `label ‖ 0x00 ‖ report data (32) ‖ encoded measurement log`.
    static func signedMessage(reportData: [UInt8], log: MeasurementLog) -> [UInt8] {
        Array(label.utf8) + [0] + reportData + encode(log)
    }

    /// `u16 count`, then per entry `u8 name length ‖ name ‖ digest (32)`.
    static func encode(_ log: MeasurementLog) -> [UInt8] {
        var bytes = bigEndian(UInt16(log.entries.count))
        for entry in log.entries {
            bytes.append(UInt8(entry.name.utf8.count))
            bytes += Array(entry.name.utf8)
            bytes += entry.digest
        }
        return bytes
    }
}
