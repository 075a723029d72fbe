import Crypto
import Foundation
import KeyrackCore
import SwiftASN1
import X509

/// The keys of a software TEE's test PKI, shaped like Intel's: a root CA, a
/// PCK platform CA, a PCK leaf, a TCB signing key, and the quoting
/// enclave's attestation key.
///
/// Test material only: the private keys are stored in the software TEE's
/// directory. A verifier accepts what they sign only when configured with
/// this root as its trust anchor.
public struct TestPKIKeys: Sendable {
    /// Root CA key.
    public let root: P256.Signing.PrivateKey
    /// PCK platform CA key.
    public let pckCA: P256.Signing.PrivateKey
    /// PCK leaf key (signs QE reports).
    public let pck: P256.Signing.PrivateKey
    /// TCB signing key (signs TCB info and QE identity).
    public let tcbSigning: P256.Signing.PrivateKey
    /// Attestation key (signs quotes).
    public let attestation: P256.Signing.PrivateKey

    /// Fresh keys from the system CSPRNG.
    public init() {
        self.init(
            root: .init(), pckCA: .init(), pck: .init(), tcbSigning: .init(), attestation: .init())
    }

    /// Keys from their parts.
    public init(
        root: P256.Signing.PrivateKey, pckCA: P256.Signing.PrivateKey, pck: P256.Signing.PrivateKey,
        tcbSigning: P256.Signing.PrivateKey, attestation: P256.Signing.PrivateKey
    ) {
        self.root = root
        self.pckCA = pckCA
        self.pck = pck
        self.tcbSigning = tcbSigning
        self.attestation = attestation
    }
}

extension TestPKIKeys: CustomStringConvertible {
    /// Redacted: private keys are never printed.
    public var description: String { "TestPKIKeys(<5 private keys, redacted>)" }
}

/// What the software TEE's collateral says about its platform: the bad
/// cases tests need are options here.
public struct TestPlatformOptions: Sendable, Hashable, Codable {
    /// The TCB status the TCB info gives the platform (`UpToDate` by default).
    public var tcbStatus: TCBStatus = .upToDate
    /// List the PCK certificate on the PCK CRL.
    public var revokedPCK = false
    /// Issue TCB info and QE identity whose next update is in the past.
    public var expiredCollateral = false
    /// A description of the TCB levels, module identities, QE levels and any
    /// other TCB info or QE identity fields, as JSON (see `keyrack tee init
    /// --help`); `nil` for one platform level rated ``tcbStatus``.
    public var tcbLevels: String? = nil
    /// Seconds before `now` the TCB info, QE identity and CRLs are issued.
    public var issuedAgo: Int64 = 3_600
    /// Seconds after `now` the TCB info and QE identity are valid for.
    public var collateralValidFor: Int64 = 30 * 86_400
    /// Seconds after `now` the CRLs are valid for.
    public var crlValidFor: Int64 = 30 * 86_400
    /// Seconds before `now` the CRLs are issued (their thisUpdate), if not ``issuedAgo``.
    public var crlIssuedAgo: Int64? = nil

    /// The default: an up-to-date platform, nothing revoked or expired.
    public init(
        tcbStatus: TCBStatus = .upToDate, revokedPCK: Bool = false, expiredCollateral: Bool = false,
        tcbLevels: String? = nil
    ) {
        self.tcbStatus = tcbStatus
        self.revokedPCK = revokedPCK
        self.expiredCollateral = expiredCollateral
        self.tcbLevels = tcbLevels
    }
}

/// The software TEE's platform: fixed SVNs and identities its certificates,
/// collateral and quotes agree on.
enum TestPlatform {
    static let fmspc: [UInt8] = [0x00, 0x90, 0x6E, 0xD5, 0x00, 0x00]
    static let pceID: [UInt8] = [0x00, 0x00]
    static let pceSVN: UInt16 = 13
    static let sgxComponents: [UInt8] = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]
    /// TEE_TCB_SVN: TDX module ISVSVN 5, module version 1 (`TDX_01`), microcode 3.
    static let teeTCBSVN: [UInt8] = [5, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    static let tdxComponents: [UInt8] = [5, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    /// Intel's TD QE signer, so the QE identity looks like Intel's.
    static let qeMRSigner = [UInt8](hex: "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5") ?? []
    static let qeMREnclave = [UInt8](repeating: 0x5E, count: 32)
    static let qeISVProdID: UInt16 = 2
    static let qeISVSVN: UInt16 = 4
    static let qeAttributes: [UInt8] = [0x11] + [UInt8](repeating: 0, count: 15)
    static let advisories = ["INTEL-SA-01036", "INTEL-SA-01079"]
}

/// The certificates and collateral of a software TEE, issued at one instant.
public struct TestPKI: Sendable {
    /// The root certificate (the trust anchor to configure).
    public let root: Certificate
    /// PCK platform CA certificate.
    public let pckCA: Certificate
    /// PCK leaf certificate, with the SGX extensions.
    public let pck: Certificate
    /// TCB signing certificate.
    public let tcbSigning: Certificate
    /// The collateral, in the dcap-qvl format.
    public let collateral: Collateral

    /// Issues the PKI and collateral at `now` (Unix seconds) with `keys`.
    public init(keys: TestPKIKeys, options: TestPlatformOptions, now: Int64) throws {
        let notBefore = Date(timeIntervalSince1970: TimeInterval(now - 86_400))
        let notAfter = Date(timeIntervalSince1970: TimeInterval(now + 10 * 365 * 86_400))
        let rootName = try Self.name("Keyrack Software TEE Root CA")
        let pckCAName = try Self.name("Keyrack Software TEE PCK Platform CA")
        let pckName = try Self.name("Keyrack Software TEE PCK Certificate")
        let tcbName = try Self.name("Keyrack Software TEE TCB Signing")

        func certificate(
            _ key: P256.Signing.PrivateKey, subject: DistinguishedName, issuer: DistinguishedName,
            issuerKey: P256.Signing.PrivateKey, ca: Bool, extra: [Certificate.Extension] = []
        ) throws -> Certificate {
            let publicKey = Certificate.PublicKey(key.publicKey)
            let issuerPublic = Certificate.PublicKey(issuerKey.publicKey)
            var extensions = try Certificate.Extensions {
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuerPublic).keyIdentifier)
                SubjectKeyIdentifier(hash: publicKey)
                if ca {
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: subject == issuer ? 1 : 0))
                } else {
                    Critical(KeyUsage(digitalSignature: true, nonRepudiation: true))
                    Critical(BasicConstraints.notCertificateAuthority)
                }
            }
            for e in extra { try extensions.append(e) }
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: notBefore, notValidAfter: notAfter, issuer: issuer, subject: subject,
                signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                issuerPrivateKey: Certificate.PrivateKey(issuerKey))
        }

        let sgx = PCKExtensions(
            ppid: Array(SHA256.hash(data: Array(keys.pck.publicKey.rawRepresentation)).prefix(16)),
            tcbComponents: TestPlatform.sgxComponents, pceSVN: TestPlatform.pceSVN, cpuSVN: TestPlatform.sgxComponents,
            pceID: TestPlatform.pceID, fmspc: TestPlatform.fmspc, sgxType: 0)
        let sgxExtension = Certificate.Extension(
            oid: PCKExtensions.oid, critical: false, value: try sgx.derEncoded()[...])

        root = try certificate(keys.root, subject: rootName, issuer: rootName, issuerKey: keys.root, ca: true)
        pckCA = try certificate(keys.pckCA, subject: pckCAName, issuer: rootName, issuerKey: keys.root, ca: true)
        pck = try certificate(
            keys.pck, subject: pckName, issuer: pckCAName, issuerKey: keys.pckCA, ca: false, extra: [sgxExtension])
        tcbSigning = try certificate(
            keys.tcbSigning, subject: tcbName, issuer: rootName, issuerKey: keys.root, ca: false)

        let crlThis = now - (options.crlIssuedAgo ?? options.issuedAgo)
        let crlNext = now + options.crlValidFor
        let rootCRL = try Self.crl(
            issuer: rootName, key: keys.root, thisUpdate: crlThis, nextUpdate: crlNext, revoked: [])
        let pckCRL = try Self.crl(
            issuer: pckCAName, key: keys.pckCA, thisUpdate: crlThis, nextUpdate: crlNext,
            revoked: options.revokedPCK ? [pck.serialNumber.bytes] : [])

        let issue = options.expiredCollateral ? now - 60 * 86_400 : now - options.issuedAgo
        let next = options.expiredCollateral ? now - 30 * 86_400 : now + options.collateralValidFor
        let description = try TestCollateralDescription(json: options.tcbLevels)
        let tcbInfo = try description.tcbInfo(status: options.tcbStatus, issue: issue, next: next)
        let qeIdentity = try description.qeIdentity(issue: issue, next: next)
        let rootDER = try Self.der(root)
        let tcbChain = PEM.encode([try Self.der(tcbSigning), rootDER])
        collateral = Collateral(
            pckCRLIssuerChain: PEM.encode([try Self.der(pckCA), rootDER]), rootCACRL: rootCRL, pckCRL: pckCRL,
            tcbInfoIssuerChain: tcbChain, tcbInfo: tcbInfo,
            tcbInfoSignature: Array(try keys.tcbSigning.signature(for: Array(tcbInfo.utf8)).rawRepresentation),
            qeIdentityIssuerChain: tcbChain, qeIdentity: qeIdentity,
            qeIdentitySignature: Array(try keys.tcbSigning.signature(for: Array(qeIdentity.utf8)).rawRepresentation))
    }

    /// The PCK chain a quote carries: leaf, platform CA, root, as PEM.
    public func pckChainPEM() throws -> String {
        PEM.encode([try Self.der(pck), try Self.der(pckCA), try Self.der(root)])
    }

    static func der(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    private static func name(_ commonName: String) throws -> DistinguishedName {
        try DistinguishedName {
            CommonName(commonName)
            OrganizationName("Keyrack (test only)")
            CountryName("US")
        }
    }

    /// A CRL or CRL entry extension a test adds: OID, criticality, DER value.
    struct TestExtension {
        let oid: ASN1ObjectIdentifier
        let critical: Bool
        let value: [UInt8]
    }

    /// A v2 CRL with a CRL number (and `extensions`), signed with `key`;
    /// each revoked entry carries `entryExtensions`.
    static func crl(
        issuer: DistinguishedName, key: P256.Signing.PrivateKey, thisUpdate: Int64, nextUpdate: Int64?,
        revoked: [ArraySlice<UInt8>], extensions: [TestExtension] = [], entryExtensions: [TestExtension] = []
    ) throws -> [UInt8] {
        func serialize(_ e: TestExtension, _ s: inout DER.Serializer) throws {
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.serialize(e.oid)
                if e.critical { try s.serialize(true) }
                try s.serialize(ASN1OctetString(contentBytes: e.value[...]))
            }
        }
        func time(_ seconds: Int64) throws -> UTCTime {
            let c = civil(seconds)
            return try UTCTime(
                year: c.year, month: c.month, day: c.day, hours: c.hour, minutes: c.minute, seconds: c.second)
        }
        func algorithm(_ s: inout DER.Serializer) throws {
            try s.appendConstructedNode(identifier: .sequence) { try $0.serialize(RevocationList.ecdsaWithSHA256) }
        }
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(1)
            try algorithm(&s)
            try s.serialize(issuer)
            try s.serialize(try time(thisUpdate))
            if let nextUpdate { try s.serialize(try time(nextUpdate)) }
            if !revoked.isEmpty {
                try s.appendConstructedNode(identifier: .sequence) { s in
                    for serial in revoked {
                        try s.appendConstructedNode(identifier: .sequence) { s in
                            // DER INTEGER: a leading zero keeps a high first bit positive.
                            let positive = (serial.first ?? 0) >= 0x80 ? [0] + Array(serial) : Array(serial)
                            s.appendPrimitiveNode(identifier: .integer) { $0.append(contentsOf: positive) }
                            try s.serialize(try time(thisUpdate))
                            if !entryExtensions.isEmpty {
                                try s.appendConstructedNode(identifier: .sequence) { s in
                                    for e in entryExtensions { try serialize(e, &s) }
                                }
                            }
                        }
                    }
                }
            }
            try s.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { s in
                try s.appendConstructedNode(identifier: .sequence) { s in
                    try s.appendConstructedNode(identifier: .sequence) { s in
                        try s.serialize(ASN1ObjectIdentifier("2.5.29.20"))
                        var number = DER.Serializer()
                        try number.serialize(1)
                        try s.serialize(ASN1OctetString(contentBytes: number.serializedBytes[...]))
                    }
                    for e in extensions { try serialize(e, &s) }
                }
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try key.signature(for: tbsBytes).derRepresentation
        var out = DER.Serializer()
        try out.appendConstructedNode(identifier: .sequence) { s in
            s.serializeRawBytes(tbsBytes)
            try algorithm(&s)
            try s.serialize(ASN1BitString(bytes: Array(signature)[...]))
        }
        return out.serializedBytes
    }
}
