import Crypto
import KeyrackCore

/// The measurements a software TEE quote reports.
public struct TDMeasurements: Sendable, Hashable, Codable {
    /// MRTD, 48 bytes.
    public var mrTD: [UInt8]
    /// RTMR0–3, 48 bytes each.
    public var rtmrs: [[UInt8]]

    /// Measurements from their parts (each 48 bytes).
    public init(mrTD: [UInt8], rtmrs: [[UInt8]]) {
        self.mrTD = mrTD
        self.rtmrs = rtmrs
    }
}

/// The shape of a software TEE quote beyond its measurements: format
/// version, body layout and the fields the DCAP rules look at. The default
/// is what a healthy TD on the software TEE's platform reports.
public struct QuoteShape: Sendable, Hashable, Codable {
    /// The v5 body types.
    public enum Body: String, Sendable, Hashable, Codable, CaseIterable {
        /// TD 1.0 (584 bytes; the only body of a v4 quote; v5 type 2).
        case td10
        /// TD 1.5 (648 bytes; v5 type 3).
        case td15
        /// TD 1.5 with the "ex" fields (885 bytes; v5 type 4).
        case td15ex

        var kind: TDReport.Kind {
            switch self {
            case .td10: .td10
            case .td15: .td15
            case .td15ex: .td15ex
            }
        }
        var type: UInt16 {
            switch self {
            case .td10: 2
            case .td15: 3
            case .td15ex: 4
            }
        }
    }

    /// Quote version, 4 or 5.
    public var version: UInt16 = 4
    /// The body layout (TD 1.0 only for version 4).
    public var body: Body = .td10
    /// TDATTRIBUTES (default: SEPT_VE_DISABLE only).
    public var tdAttributes: UInt64 = TDAttributes.septVEDisable
    /// TEE_TCB_SVN, 16 bytes (default: the platform's, module version 1).
    public var teeTCBSVN: [UInt8] = TestPlatform.teeTCBSVN
    /// TEE_TCB_SVN2, 16 bytes (TD 1.5 bodies; default: TEE_TCB_SVN).
    public var teeTCBSVN2: [UInt8]? = nil
    /// MRSERVICETD, 48 bytes (TD 1.5 bodies; default: zero).
    public var mrServiceTD: [UInt8] = [UInt8](repeating: 0, count: 48)
    /// SEAMATTRIBUTES, 8 bytes (default: zero).
    public var seamAttributes: [UInt8] = [UInt8](repeating: 0, count: 8)
    /// MRSIGNERSEAM, 48 bytes (default: zero, as Intel's modules).
    public var mrSignerSeam: [UInt8] = [UInt8](repeating: 0, count: 48)
    /// Bytes appended after the signature data (real quotes carry zero padding).
    public var trailingBytes: [UInt8] = []

    /// The default shape: a v4 TD 1.0 quote of a healthy TD.
    public init() {}

    func validated() throws(AttestationError) -> QuoteShape {
        func bad(_ reason: String) -> AttestationError { AttestationError(.malformed, step: .parseQuote, reason) }
        guard version == 4 || version == 5 else { throw bad("quote version must be 4 or 5, not \(version)") }
        guard version == 5 || body == .td10 else { throw bad("a v4 quote has a TD 1.0 body only") }
        guard teeTCBSVN.count == 16, (teeTCBSVN2?.count ?? 16) == 16 else { throw bad("TEE_TCB_SVN is 16 bytes") }
        guard mrServiceTD.count == 48, mrSignerSeam.count == 48 else {
            throw bad("MRSERVICETD and MRSIGNERSEAM are 48 bytes")
        }
        guard seamAttributes.count == 8 else { throw bad("SEAMATTRIBUTES is 8 bytes") }
        return self
    }
}

/// Writes TDX quotes in the real byte formats (v4, v5 with TD 1.0, TD 1.5 or
/// TD 1.5 "ex" bodies): header, TD report, signature data with the
/// attestation key, a real QE report signed by the PCK key, QE auth data and
/// the PCK chain.
enum QuoteWriter {
    static func quote(
        keys: TestPKIKeys, pckChainPEM: String, reportData: [UInt8], measurements: TDMeasurements, debug: Bool,
        shape: QuoteShape = QuoteShape(), certification precomputed: [UInt8]? = nil,
        attestationKey knownKey: [UInt8]? = nil
    ) throws(AttestationError) -> [UInt8] {
        func bad(_ reason: String) -> AttestationError { AttestationError(.malformed, step: .parseQuote, reason) }
        guard reportData.count == 64 else { throw bad("report data must be 64 bytes, not \(reportData.count)") }
        guard measurements.mrTD.count == 48 else { throw bad("MRTD must be 48 bytes") }
        guard measurements.rtmrs.count == 4, measurements.rtmrs.allSatisfy({ $0.count == 48 }) else {
            throw bad("RTMR0–3 must be 48 bytes each")
        }
        let shape = try shape.validated()
        var out: [UInt8] = []
        out.reserveCapacity(5_000)
        func u16(_ v: UInt16) { out += [UInt8(v & 0xFF), UInt8(v >> 8)] }
        func u32(_ v: UInt32) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        // The public key's encoding costs a point conversion: a caller that
        // signs many quotes passes it in.
        let attestationKey = knownKey ?? Array(keys.attestation.publicKey.rawRepresentation)

        // Header.
        u16(shape.version)
        u16(QuoteHeader.attestationKeyTypeECDSAP256)
        u32(QuoteHeader.teeTypeTDX)
        u16(0)
        u16(0)
        out += QuoteHeader.intelQEVendorID
        out += Array(SHA256.hash(data: attestationKey).prefix(16)) + [0, 0, 0, 0]

        if shape.version == 5 {
            u16(shape.body.type)
            u32(UInt32(shape.body.kind.size))
        }
        let bodyStart = out.count

        // TD 1.0 report body.
        out += shape.teeTCBSVN
        out += [UInt8](repeating: 0x5A, count: 48)  // MRSEAM
        out += shape.mrSignerSeam
        out += shape.seamAttributes
        let attributes: UInt64 = shape.tdAttributes | (debug ? TDAttributes.debug : 0)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: attributes >> (8 * i))) }
        out += [0xE7, 0x02, 0x06, 0, 0, 0, 0, 0]  // XFAM
        out += measurements.mrTD
        out += [UInt8](repeating: 0, count: 48 * 3)  // MRCONFIGID, MROWNER, MROWNERCONFIG
        for rtmr in measurements.rtmrs { out += rtmr }
        out += reportData
        if shape.body != .td10 {
            out += shape.teeTCBSVN2 ?? shape.teeTCBSVN
            out += shape.mrServiceTD
        }
        if shape.body == .td15ex {
            // VMID, TD id, device info, service-TD hashes and attributes, initial
            // CPUSVN, TEE_TCB_SVN and FMSPC: fixed test values.
            out += [0] + [UInt8](repeating: 0x1D, count: 32) + [UInt8](repeating: 0, count: 48 * 2 + 8)
            out += TestPlatform.sgxComponents + shape.teeTCBSVN + TestPlatform.fmspc + [UInt8](repeating: 0, count: 6)
            out += [UInt8](repeating: 0, count: 48 + 8)
        }
        precondition(out.count - bodyStart == shape.body.kind.size)

        let signature: [UInt8]
        do {
            signature = Array(try keys.attestation.signature(for: out).rawRepresentation)
        } catch {
            throw AttestationError(.invalidSignature, step: .quoteSignature, "signing the quote failed")
        }
        let certification: [UInt8]
        if let precomputed {
            certification = precomputed
        } else {
            certification = try certificationData(keys: keys, pckChainPEM: pckChainPEM)
        }

        var signatureData: [UInt8] = signature + attestationKey
        signatureData += [UInt8(QuoteSignatureData.certificationTypeQEReport), 0]
        for i in 0..<4 { signatureData.append(UInt8(truncatingIfNeeded: certification.count >> (8 * i))) }
        signatureData += certification

        u32(UInt32(signatureData.count))
        out += signatureData
        out += shape.trailingBytes
        return out
    }

    /// The certification data (QE report, its PCK signature, QE auth data and
    /// the PCK chain). It does not depend on the quote, so a software TEE
    /// makes it once, as a real quoting enclave's report is fixed per
    /// attestation key.
    static func certificationData(keys: TestPKIKeys, pckChainPEM: String) throws(AttestationError) -> [UInt8] {
        let attestationKey = Array(keys.attestation.publicKey.rawRepresentation)
        let authData = Array(SHA256.hash(data: Array("keyrack software TEE".utf8)))

        // QE report.
        var qe: [UInt8] = []
        qe += TestPlatform.sgxComponents  // CPUSVN
        qe += [0, 0, 0, 0]  // MISCSELECT
        qe += [UInt8](repeating: 0, count: 28)
        qe += TestPlatform.qeAttributes
        qe += TestPlatform.qeMREnclave
        qe += [UInt8](repeating: 0, count: 32)
        qe += TestPlatform.qeMRSigner
        qe += [UInt8](repeating: 0, count: 96)
        qe += [UInt8(TestPlatform.qeISVProdID & 0xFF), UInt8(TestPlatform.qeISVProdID >> 8)]
        qe += [UInt8(TestPlatform.qeISVSVN & 0xFF), UInt8(TestPlatform.qeISVSVN >> 8)]
        qe += [UInt8](repeating: 0, count: 60)
        qe += Array(SHA256.hash(data: attestationKey + authData)) + [UInt8](repeating: 0, count: 32)
        precondition(qe.count == EnclaveReport.size)
        let qeSignature: [UInt8]
        do {
            qeSignature = Array(try keys.pck.signature(for: qe).rawRepresentation)
        } catch {
            throw AttestationError(.invalidSignature, step: .qeReportSignature, "signing the QE report failed")
        }

        let chain = Array(pckChainPEM.utf8) + [0]
        var certification: [UInt8] = qe + qeSignature
        certification += [UInt8(authData.count), 0] + authData
        certification += [UInt8(QuoteSignatureData.certificationTypePCKChain), 0]
        for i in 0..<4 { certification.append(UInt8(truncatingIfNeeded: chain.count >> (8 * i))) }
        certification += chain

        return certification
    }
}
