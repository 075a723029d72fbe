import Foundation
import KeyrackCore

/// The collateral a TDX quote is verified against, in the shape dcap-qvl
/// uses (`shared/testdata/tdx/*.collateral.json`): TCB info and QE identity
/// as signed JSON strings with their signatures (hex, `r || s`) and issuer
/// chains (PEM), the root CA and PCK CRLs (hex DER) and the PCK CRL's issuer
/// chain.
///
/// Loading only decodes the document; every signature and date is checked by
/// ``QuoteVerifier``. The signed JSON is kept byte for byte, because the
/// signatures cover exactly those bytes.
public struct Collateral: Sendable, Hashable {
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.digest == rhs.digest }
    public func hash(into hasher: inout Hasher) { hasher.combine(digest) }

    /// The PCK CRL issuer chain, PEM.
    public let pckCRLIssuerChain: String
    /// The root CA's CRL, DER.
    public let rootCACRL: [UInt8]
    /// The PCK CA's CRL, DER.
    public let pckCRL: [UInt8]
    /// The TCB info issuer chain (TCB signing certificate, root), PEM.
    public let tcbInfoIssuerChain: String
    /// The signed TCB info JSON, exactly as signed.
    public let tcbInfo: String
    /// The TCB info signature, `r || s`.
    public let tcbInfoSignature: [UInt8]
    /// The QE identity issuer chain, PEM.
    public let qeIdentityIssuerChain: String
    /// The signed QE identity JSON, exactly as signed.
    public let qeIdentity: String
    /// The QE identity signature, `r || s`.
    public let qeIdentitySignature: [UInt8]
    /// SHA-256 over all of the above: the cache key of the verified collateral.
    let digest: Digest
    /// The parts decoded (not verified) once, when the collateral is loaded.
    let decoded: DecodedCollateral

    /// Creates collateral from its parts.
    public init(
        pckCRLIssuerChain: String, rootCACRL: [UInt8], pckCRL: [UInt8], tcbInfoIssuerChain: String, tcbInfo: String,
        tcbInfoSignature: [UInt8], qeIdentityIssuerChain: String, qeIdentity: String, qeIdentitySignature: [UInt8]
    ) {
        self.pckCRLIssuerChain = pckCRLIssuerChain
        self.rootCACRL = rootCACRL
        self.pckCRL = pckCRL
        self.tcbInfoIssuerChain = tcbInfoIssuerChain
        self.tcbInfo = tcbInfo
        self.tcbInfoSignature = tcbInfoSignature
        self.qeIdentityIssuerChain = qeIdentityIssuerChain
        self.qeIdentity = qeIdentity
        self.qeIdentitySignature = qeIdentitySignature
        self.digest = Digest(parts: [
            Array(pckCRLIssuerChain.utf8)[...], rootCACRL[...], pckCRL[...], Array(tcbInfoIssuerChain.utf8)[...],
            Array(tcbInfo.utf8)[...], tcbInfoSignature[...], Array(qeIdentityIssuerChain.utf8)[...],
            Array(qeIdentity.utf8)[...], qeIdentitySignature[...],
        ])
        self.decoded = DecodedCollateral(
            rootCACRL: rootCACRL, pckCRL: pckCRL, pckCRLIssuerChain: pckCRLIssuerChain,
            tcbInfoIssuerChain: tcbInfoIssuerChain, tcbInfo: tcbInfo, qeIdentityIssuerChain: qeIdentityIssuerChain,
            qeIdentity: qeIdentity)
    }

    /// Decodes a dcap-qvl collateral JSON document.
    /// - Throws: ``AttestationError`` with step ``AttestationError/Step/parseCollateral``.
    public init(json: some DataProtocol) throws(AttestationError) {
        let root: JSON
        do {
            root = try JSON.parse(String(decoding: Array(json), as: UTF8.self))
        } catch {
            throw AttestationError(.decodingFailed, step: .parseCollateral, "collateral is not JSON: \(error)")
        }
        guard case .object = root else {
            throw AttestationError(.decodingFailed, step: .parseCollateral, "collateral is not a JSON object")
        }
        func string(_ key: String) throws(AttestationError) -> String {
            guard let value = root[key]?.string else {
                throw AttestationError(
                    .decodingFailed, step: .parseCollateral, "collateral field \(key) is missing or not a string")
            }
            return value
        }
        func hex(_ key: String) throws(AttestationError) -> [UInt8] {
            guard let value = [UInt8](hex: try string(key)) else {
                throw AttestationError(.decodingFailed, step: .parseCollateral, "collateral field \(key) is not hex")
            }
            return value
        }
        self.init(
            pckCRLIssuerChain: try string("pck_crl_issuer_chain"), rootCACRL: try hex("root_ca_crl"),
            pckCRL: try hex("pck_crl"), tcbInfoIssuerChain: try string("tcb_info_issuer_chain"),
            tcbInfo: try string("tcb_info"), tcbInfoSignature: try hex("tcb_info_signature"),
            qeIdentityIssuerChain: try string("qe_identity_issuer_chain"), qeIdentity: try string("qe_identity"),
            qeIdentitySignature: try hex("qe_identity_signature"))
    }

    /// The dcap-qvl JSON form (what ``init(json:)`` reads).
    public func jsonData() -> Data {
        let object: [String: String] = [
            "pck_crl_issuer_chain": pckCRLIssuerChain, "root_ca_crl": rootCACRL.hexString,
            "pck_crl": pckCRL.hexString, "tcb_info_issuer_chain": tcbInfoIssuerChain, "tcb_info": tcbInfo,
            "tcb_info_signature": tcbInfoSignature.hexString, "qe_identity_issuer_chain": qeIdentityIssuerChain,
            "qe_identity": qeIdentity, "qe_identity_signature": qeIdentitySignature.hexString,
        ]
        // Sorted keys make the file stable; the dictionary holds only strings.
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])) ?? Data()
    }

    /// The FMSPC of the TCB info, upper-case hex, without checking the
    /// signature: the key a collateral directory is indexed by.
    public func fmspc() throws(AttestationError) -> String {
        try decoded.tcbInfo.get().fmspc.hexString.uppercased()
    }
}

/// The collateral's parts decoded when it is loaded — CRLs, certificate
/// chains, TCB info and QE identity — so that verification starts from
/// values. Nothing here is verified, and a part that does not decode keeps
/// its error, which verification reports at that part's step.
final class DecodedCollateral: Sendable {
    let rootCACRL: Result<RevocationList, AttestationError>
    let pckCRL: Result<RevocationList, AttestationError>
    let pckCRLIssuerChain: Result<[ParsedCertificate], AttestationError>
    let tcbInfoIssuerChain: Result<[ParsedCertificate], AttestationError>
    let tcbInfo: Result<TCBInfo, AttestationError>
    let qeIdentityIssuerChain: Result<[ParsedCertificate], AttestationError>
    let qeIdentity: Result<QEIdentity, AttestationError>

    init(
        rootCACRL: [UInt8], pckCRL: [UInt8], pckCRLIssuerChain: String, tcbInfoIssuerChain: String, tcbInfo: String,
        qeIdentityIssuerChain: String, qeIdentity: String
    ) {
        self.rootCACRL = Result { () throws(AttestationError) in try RevocationList(der: rootCACRL) }
        self.pckCRL = Result { () throws(AttestationError) in try RevocationList(der: pckCRL) }
        self.pckCRLIssuerChain = Result { () throws(AttestationError) in
            try ChainVerifier.decode(Array(pckCRLIssuerChain.utf8), step: .crl, name: "PCK CRL issuer")
        }
        let tcbChain = Result { () throws(AttestationError) in
            try ChainVerifier.decode(Array(tcbInfoIssuerChain.utf8), step: .tcbInfo, name: "TCB info issuer")
        }
        self.tcbInfoIssuerChain = tcbChain
        self.tcbInfo = Result { () throws(AttestationError) in try TCBInfo(json: tcbInfo) }
        if qeIdentityIssuerChain == tcbInfoIssuerChain, case .success = tcbChain {
            self.qeIdentityIssuerChain = tcbChain
        } else {
            self.qeIdentityIssuerChain = Result { () throws(AttestationError) in
                try ChainVerifier.decode(
                    Array(qeIdentityIssuerChain.utf8), step: .qeIdentity, name: "QE identity issuer")
            }
        }
        self.qeIdentity = Result { () throws(AttestationError) in try QEIdentity(json: qeIdentity) }
    }
}
