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

/// Writes TDX quotes in the real v4 byte format: header, TD 1.0 report,
/// signature data with the attestation key, a real QE report signed by the
/// PCK key, QE auth data and the PCK chain.
enum QuoteWriter {
    static func quote(
        keys: TestPKIKeys, pckChainPEM: String, reportData: [UInt8], measurements: TDMeasurements, debug: Bool,
        certification precomputed: [UInt8]? = nil, attestationKey knownKey: [UInt8]? = nil
    ) throws(AttestationError) -> [UInt8] {
        func bad(_ reason: String) -> AttestationError { AttestationError(.malformed, step: .parseQuote, reason) }
        guard reportData.count == 64 else { throw bad("report data must be 64 bytes, not \(reportData.count)") }
        guard measurements.mrTD.count == 48 else { throw bad("MRTD must be 48 bytes") }
        guard measurements.rtmrs.count == 4, measurements.rtmrs.allSatisfy({ $0.count == 48 }) else {
            throw bad("RTMR0–3 must be 48 bytes each")
        }
        var out: [UInt8] = []
        out.reserveCapacity(5_000)
        func u16(_ v: UInt16) { out += [UInt8(v & 0xFF), UInt8(v >> 8)] }
        func u32(_ v: UInt32) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        // The public key's encoding costs a point conversion: a caller that
        // signs many quotes passes it in.
        let attestationKey = knownKey ?? Array(keys.attestation.publicKey.rawRepresentation)

        // Header.
        u16(4)
        u16(QuoteHeader.attestationKeyTypeECDSAP256)
        u32(QuoteHeader.teeTypeTDX)
        u16(0)
        u16(0)
        out += QuoteHeader.intelQEVendorID
        out += Array(SHA256.hash(data: attestationKey).prefix(16)) + [0, 0, 0, 0]

        // TD 1.0 report body.
        out += TestPlatform.teeTCBSVN
        out += [UInt8](repeating: 0x5A, count: 48)  // MRSEAM
        out += [UInt8](repeating: 0, count: 48)  // MRSIGNERSEAM (Intel's modules: zero)
        out += [UInt8](repeating: 0, count: 8)  // SEAMATTRIBUTES
        let attributes: UInt64 = 0x1000_0000 | (debug ? 1 : 0)  // SEPT_VE_DISABLE, DEBUG
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: attributes >> (8 * i))) }
        out += [0xE7, 0x02, 0x06, 0, 0, 0, 0, 0]  // XFAM
        out += measurements.mrTD
        out += [UInt8](repeating: 0, count: 48 * 3)  // MRCONFIGID, MROWNER, MROWNERCONFIG
        for rtmr in measurements.rtmrs { out += rtmr }
        out += reportData
        precondition(out.count == 48 + 584)

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
