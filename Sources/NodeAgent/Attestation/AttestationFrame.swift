import NIOCore

/// The frames of the attestation exchange, each the payload of one
/// length-prefixed channel frame:
///
/// ```
/// "KRAT" ‖ version 1 ‖ kind ‖ body
/// kind 1 nonce:     32 random bytes
/// kind 2 evidence:  evidence kind ‖ …
///        1 software root of trust: report data (32) ‖ u16 count ‖ count × (u8 name length ‖ name ‖ SHA-256 (32))
///                                  ‖ u16 signature length ‖ signature
///        2 TDX quote:              u32 quote length ‖ quote
/// kind 3 accepted:  (empty)
/// kind 4 refused:   u16 length ‖ reason (UTF-8, at most 512 bytes)
/// kind 5 aborted:   as refused, when the sender failed on its own side
///                   (it could not produce its evidence, or timed out)
/// ```
///
/// Integers are big-endian. Anything else, a short body or trailing bytes
/// make the frame malformed.
enum AttestationFrame: Sendable, Hashable {
    case nonce([UInt8])
    case evidence(NodeEvidence)
    case accepted
    case refused(String)
    case aborted(String)

    static let magic = Array("KRAT".utf8)
    static let version: UInt8 = 1
    static let maximumReason = 512
    static let maximumQuote = 64 * 1024

    private enum Kind: UInt8 {
        case nonce = 1
        case evidence = 2
        case accepted = 3
        case refused = 4
        case aborted = 5
    }

    private enum Evidence: UInt8 {
        case softwareRootOfTrust = 1
        case tdxQuote = 2
    }

    /// What the frame is, for error messages.
    var name: String {
        switch self {
        case .nonce: return "nonce"
        case .evidence: return "evidence"
        case .accepted: return "acceptance"
        case .refused: return "refusal"
        case .aborted: return "abort"
        }
    }

    var buffer: ByteBuffer {
        var out = ByteBuffer()
        out.writeBytes(Self.magic)
        out.writeInteger(Self.version)
        switch self {
        case .nonce(let nonce):
            out.writeInteger(Kind.nonce.rawValue)
            out.writeBytes(nonce)
        case .evidence(.softwareRootOfTrust(let evidence)):
            out.writeInteger(Kind.evidence.rawValue)
            out.writeInteger(Evidence.softwareRootOfTrust.rawValue)
            out.writeBytes(evidence.reportData)
            out.writeBytes(SoftwareEvidence.encode(evidence.log))
            out.writeInteger(UInt16(evidence.signature.count))
            out.writeBytes(evidence.signature)
        case .evidence(.tdxQuote(let quote)):
            out.writeInteger(Kind.evidence.rawValue)
            out.writeInteger(Evidence.tdxQuote.rawValue)
            out.writeInteger(UInt32(quote.count))
            out.writeBytes(quote)
        case .accepted:
            out.writeInteger(Kind.accepted.rawValue)
        case .refused(let reason):
            out.writeInteger(Kind.refused.rawValue)
            Self.write(reason, to: &out)
        case .aborted(let reason):
            out.writeInteger(Kind.aborted.rawValue)
            Self.write(reason, to: &out)
        }
        return out
    }

    private static func write(_ reason: String, to out: inout ByteBuffer) {
        let bytes = Array(clean(reason).utf8)
        out.writeInteger(UInt16(bytes.count))
        out.writeBytes(bytes)
    }

    /// Parses one frame's payload.
    /// - Throws: the reason it is malformed.
    init(parsing frame: ByteBuffer) throws(PeerChannelError) {
        var input = frame
        func malformed(_ what: String) -> PeerChannelError {
            PeerChannelError(.malformed, "malformed attestation frame: \(what)")
        }
        guard input.readBytes(length: 4) == Self.magic else { throw malformed("not an attestation frame") }
        guard input.readInteger(as: UInt8.self) == Self.version else { throw malformed("unknown version") }
        guard let raw = input.readInteger(as: UInt8.self), let kind = Kind(rawValue: raw) else {
            throw malformed("unknown frame kind")
        }
        switch kind {
        case .nonce:
            guard let nonce = input.readBytes(length: ChannelBinding.nonceSize) else { throw malformed("short nonce") }
            self = .nonce(nonce)
        case .evidence:
            guard let raw = input.readInteger(as: UInt8.self), let evidence = Evidence(rawValue: raw) else {
                throw malformed("unknown evidence kind")
            }
            switch evidence {
            case .softwareRootOfTrust:
                self = .evidence(.softwareRootOfTrust(try Self.software(&input, malformed: malformed)))
            case .tdxQuote:
                guard let length = input.readInteger(as: UInt32.self), Int(length) <= Self.maximumQuote,
                    let quote = input.readBytes(length: Int(length))
                else { throw malformed("truncated or oversized TDX quote") }
                self = .evidence(.tdxQuote(quote))
            }
        case .accepted:
            self = .accepted
        case .refused, .aborted:
            guard let length = input.readInteger(as: UInt16.self), Int(length) <= Self.maximumReason,
                let bytes = input.readBytes(length: Int(length))
            else { throw malformed("truncated refusal") }
            let reason = Self.clean(String(decoding: bytes, as: UTF8.self))
            self = kind == .refused ? .refused(reason) : .aborted(reason)
        }
        guard input.readableBytes == 0 else { throw malformed("\(input.readableBytes) trailing bytes") }
    }

    private static func software(
        _ input: inout ByteBuffer, malformed: (String) -> PeerChannelError
    ) throws(PeerChannelError) -> SoftwareEvidence {
        guard let reportData = input.readBytes(length: 32), let count = input.readInteger(as: UInt16.self) else {
            throw malformed("truncated software evidence")
        }
        var pairs: [(name: String, digest: [UInt8])] = []
        for _ in 0..<count {
            guard let length = input.readInteger(as: UInt8.self), let name = input.readBytes(length: Int(length)),
                let digest = input.readBytes(length: 32)
            else { throw malformed("truncated measurement log") }
            guard let text = String(validating: name, as: UTF8.self) else {
                throw malformed("a measurement name is not UTF-8")
            }
            pairs.append((text, digest))
        }
        let log: MeasurementLog
        do {
            log = try MeasurementLog(pairs)
        } catch {
            throw malformed(error.reason)
        }
        guard let length = input.readInteger(as: UInt16.self), let signature = input.readBytes(length: Int(length))
        else { throw malformed("truncated signature") }
        return SoftwareEvidence(reportData: reportData, log: log, signature: signature)
    }

    /// Whether the sender ends the exchange with it.
    var isFinal: Bool {
        switch self {
        case .refused, .aborted: return true
        case .nonce, .evidence, .accepted: return false
        }
    }

    /// At most ``maximumReason`` bytes, without control characters (the
    /// reason ends up in logs).
    static func clean(_ reason: String) -> String {
        var out = ""
        for scalar in reason.unicodeScalars {
            let next = scalar.properties.generalCategory == .control ? " " : String(scalar)
            guard out.utf8.count + next.utf8.count <= maximumReason else { break }
            out += next
        }
        return out
    }
}
