import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import Attestation

/// Certificate-chain error paths, with chains built for the purpose.
@Suite("certificate chain errors")
struct ChainErrorTests {
    /// A PCK leaf for `lab`'s platform signed by `issuerKey` as `issuer`, with or without the SGX extension.
    static func leaf(
        _ lab: Lab, issuer: DistinguishedName, issuerKey: P256.Signing.PrivateKey, sgx: Bool = true
    ) throws -> Certificate {
        let ext = lab.pki.pck.extensions[oid: PCKExtensions.oid].map { [$0] } ?? []
        var extensions = try Certificate.Extensions { Critical(BasicConstraints.notCertificateAuthority) }
        if sgx { for e in ext { try extensions.append(e) } }
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(lab.keys.pck.publicKey),
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: issuer,
            subject: lab.pki.pck.subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: .init(issuerKey))
    }

    static func quote(_ lab: Lab, chain: [Certificate]) throws -> [UInt8] {
        try QuoteWriter.quote(
            keys: lab.keys, pckChainPEM: PEM.encode(try chain.map(TestPKI.der)), reportData: sampleReportData,
            measurements: SoftwareTEE.fixedMeasurements, debug: false)
    }

    @Test("the chain's carried certificates are exposed, leaf first")
    func exposed() throws {
        let lab = try Lab()
        let certificates = try Quote(bytes: lab.quote).pckCertificates()
        #expect(certificates.map(\.subject) == [lab.pki.pck.subject, lab.pki.pckCA.subject, lab.pki.root.subject])
    }

    @Test("a leaf issued by a certificate that is not a CA")
    func issuerNotCA() throws {
        let lab = try Lab()
        let leaf = try Self.leaf(lab, issuer: lab.pki.tcbSigning.subject, issuerKey: lab.keys.tcbSigning)
        let quote = try Self.quote(lab, chain: [leaf, lab.pki.tcbSigning, lab.pki.root])
        lab.expectFailure(lab.pki.collateral, quote: quote, .untrustedChain, .pckChain, "issuer is not a CA")
    }

    @Test("a chain that holds only the trust anchor")
    func onlyAnchor() throws {
        let lab = try Lab()
        lab.expectFailure(
            lab.pki.collateral, quote: try Self.quote(lab, chain: [lab.pki.root, lab.pki.root]), .untrustedChain,
            .pckChain, "only the root")
    }

    @Test("a PCK leaf without the SGX extension")
    func noSGXExtension() throws {
        let lab = try Lab()
        let leaf = try Self.leaf(lab, issuer: lab.pki.pckCA.subject, issuerKey: lab.keys.pckCA, sgx: false)
        let quote = try Self.quote(lab, chain: [leaf, lab.pki.pckCA, lab.pki.root])
        lab.expectFailure(lab.pki.collateral, quote: quote, .decodingFailed, .pckChain, "no SGX extension")
        #expect(throws: AttestationError.self) { try Quote(bytes: quote).unverifiedPCKExtensions() }
    }

    @Test("a leaf whose signature is by the wrong key")
    func wrongSigner() throws {
        let lab = try Lab()
        let leaf = try Self.leaf(lab, issuer: lab.pki.pckCA.subject, issuerKey: P256.Signing.PrivateKey())
        let quote = try Self.quote(lab, chain: [leaf, lab.pki.pckCA, lab.pki.root])
        lab.expectFailure(lab.pki.collateral, quote: quote, .invalidSignature, .pckChain, "forged leaf")
    }

    @Test("P-384 keys in the PCK chain: an intermediate's, and the leaf's")
    func p384Keys() throws {
        let lab = try Lab()
        let caKey = P384.Signing.PrivateKey()
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.root.subject,
            subject: lab.pki.pckCA.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            }, issuerPrivateKey: .init(lab.keys.root))
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(lab.keys.pck.publicKey),
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.pckCA.subject,
            subject: lab.pki.pck.subject, signatureAlgorithm: .ecdsaWithSHA384, extensions: Certificate.Extensions(),
            issuerPrivateKey: .init(caKey))
        lab.expectFailure(
            lab.pki.collateral, quote: try Self.quote(lab, chain: [leaf, ca, lab.pki.root]), .unsupported, .pckChain,
            "P-384 intermediate")

        let leafKey = P384.Signing.PrivateKey()
        let p384Leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.pckCA.subject,
            subject: lab.pki.pck.subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(),
            issuerPrivateKey: .init(lab.keys.pckCA))
        lab.expectFailure(
            lab.pki.collateral, quote: try Self.quote(lab, chain: [p384Leaf, lab.pki.pckCA, lab.pki.root]),
            .unsupported, .pckChain, "P-384 leaf")
    }

    @Test("a certificate that is valid PEM but not a certificate")
    func notACertificate() throws {
        let lab = try Lab()
        let pem = PEM.encode([[0x30, 0x03, 0x02, 0x01, 0x00]])
        let quote = try QuoteWriter.quote(
            keys: lab.keys, pckChainPEM: pem, reportData: sampleReportData,
            measurements: SoftwareTEE.fixedMeasurements, debug: false)
        lab.expectFailure(lab.pki.collateral, quote: quote, .decodingFailed, .pckChain, "not a certificate")
        #expect(throws: AttestationError.self) { try Quote(bytes: quote).unverifiedPCKExtensions() }
    }

    @Test("a CRL without nextUpdate is refused")
    func crlWithoutNextUpdate() throws {
        let lab = try Lab()
        let der = try TestPKI.crl(
            issuer: lab.pki.root.subject, key: lab.keys.root, thisUpdate: lab.now, nextUpdate: nil, revoked: [])
        let error = #expect(throws: AttestationError.self) { try RevocationList(der: der) }
        #expect(error?.reason.contains("nextUpdate") == true)
        lab.expectFailure(try lab.collateral(rootCRL: der), .decodingFailed, .crl, "root CRL without nextUpdate")
    }

    @Test("a trust anchor with a P-384 key is refused")
    func p384Anchor() throws {
        let key = P384.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("P-384 root") }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey), notValidBefore: Date(),
            notValidAfter: Date().addingTimeInterval(3_600), issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA384, extensions: Certificate.Extensions(), issuerPrivateKey: .init(key))
        let error = #expect(throws: AttestationError.self) { try TrustAnchor(bytes: try TestPKI.der(certificate)) }
        #expect(error?.code == .unsupported)
    }

    @Test("an SGX extension without an FMSPC is refused")
    func incompleteSGXExtension() throws {
        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { s in
            try s.appendConstructedNode(identifier: .sequence) { s in
                try s.serialize(ASN1ObjectIdentifier("1.2.840.113741.1.13.1.1"))
                try s.serialize(ASN1OctetString(contentBytes: [UInt8](repeating: 1, count: 16)[...]))
            }
        }
        let error = #expect(throws: AttestationError.self) {
            try PCKExtensions(derEncoded: serializer.serializedBytes[...])
        }
        #expect(error?.reason.contains("lacks a required field") == true)
    }
}

/// Hardening Intel's PKI does not exercise (review L11).
@Suite("certificate and CRL hardening")
struct HardeningTests {
    /// The lab's PCK platform CA re-issued by the root with other key usage or path length.
    static func platformCA(_ lab: Lab, keyCertSign: Bool = true, maxPathLength: Int? = 0) throws -> Certificate {
        let key = Certificate.PublicKey(lab.keys.pckCA.publicKey)
        let extensions = try Certificate.Extensions {
            SubjectKeyIdentifier(hash: key)
            Critical(KeyUsage(keyCertSign: keyCertSign, cRLSign: true))
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: maxPathLength))
        }
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key,
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.root.subject,
            subject: lab.pki.pckCA.subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: .init(lab.keys.root))
    }

    @Test("an issuer without keyCertSign is refused; with it, the same chain verifies")
    func keyCertSign() throws {
        let lab = try Lab()
        let leaf = try ChainErrorTests.leaf(lab, issuer: lab.pki.pckCA.subject, issuerKey: lab.keys.pckCA)
        let without = try ChainErrorTests.quote(
            lab, chain: [leaf, try Self.platformCA(lab, keyCertSign: false), lab.pki.root])
        lab.expectFailure(lab.pki.collateral, quote: without, .untrustedChain, .pckChain, "no keyCertSign")
        let with = try ChainErrorTests.quote(lab, chain: [leaf, try Self.platformCA(lab), lab.pki.root])
        #expect(try lab.verify(lab.pki.collateral, quote: with).status == .upToDate)
    }

    @Test("an issuer's pathLenConstraint limits the CA certificates below it")
    func pathLength() throws {
        let lab = try Lab()
        let subKey = P256.Signing.PrivateKey()
        let subName = try DistinguishedName { CommonName("Keyrack test sub-CA") }
        let subPublic = Certificate.PublicKey(subKey.publicKey)
        let sub = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: subPublic,
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.pckCA.subject,
            subject: subName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            }, issuerPrivateKey: .init(lab.keys.pckCA))
        let leaf = try ChainErrorTests.leaf(lab, issuer: subName, issuerKey: subKey)
        // The lab's root (same key and name) without a path length of its own.
        let rootKey = Certificate.PublicKey(lab.keys.root.publicKey)
        let root = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: rootKey,
            notValidBefore: Date(timeIntervalSince1970: TimeInterval(lab.now - 86_400)),
            notValidAfter: Date(timeIntervalSince1970: TimeInterval(lab.now + 86_400)), issuer: lab.pki.root.subject,
            subject: lab.pki.root.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            }, issuerPrivateKey: .init(lab.keys.root))
        let rootDER = try TestPKI.der(root)
        let verifier = QuoteVerifier(trustAnchor: try TrustAnchor(bytes: rootDER))
        let c = lab.pki.collateral
        let tcbChain = PEM.encode([try TestPKI.der(lab.pki.tcbSigning), rootDER])
        let collateral = Collateral(
            pckCRLIssuerChain: PEM.encode([try TestPKI.der(lab.pki.pckCA), rootDER]), rootCACRL: c.rootCACRL,
            pckCRL: c.pckCRL, tcbInfoIssuerChain: tcbChain, tcbInfo: c.tcbInfo, tcbInfoSignature: c.tcbInfoSignature,
            qeIdentityIssuerChain: tcbChain, qeIdentity: c.qeIdentity, qeIdentitySignature: c.qeIdentitySignature)
        // The usual chain verifies under this root.
        let usual = try ChainErrorTests.quote(lab, chain: [lab.pki.pck, lab.pki.pckCA, root])
        #expect(try verifier.verify(quote: usual, collateral: collateral, now: lab.now).status == .upToDate)
        func failure(_ chain: [Certificate]) throws -> AttestationError? {
            let quote = try ChainErrorTests.quote(lab, chain: chain)
            return #expect(throws: AttestationError.self) {
                try verifier.verify(quote: quote, collateral: collateral, now: lab.now)
            }
        }
        // Platform CA with path length 0: a CA below it is one too many.
        let strict = try failure([leaf, sub, try Self.platformCA(lab), root])
        #expect(strict == AttestationError(.untrustedChain, step: .pckChain, ""))
        // Path length 1 allows it: the chain gets as far as the CRLs (there is none from the sub-CA).
        let loose = try failure([leaf, sub, try Self.platformCA(lab, maxPathLength: 1), root])
        #expect(loose == AttestationError(.crlMissing, step: .pckChain, ""))
    }

    @Test("a critical CRL or CRL entry extension we do not understand rejects the CRL; a non-critical one does not")
    func criticalCRLExtensions() throws {
        let lab = try Lab()
        let name = lab.pki.pckCA.subject
        // IssuingDistributionPoint, an empty SEQUENCE.
        let idp = TestPKI.TestExtension(oid: "2.5.29.28", critical: true, value: [0x30, 0x00])
        let soft = TestPKI.TestExtension(oid: "2.5.29.28", critical: false, value: [0x30, 0x00])
        // Certificate issuer (an entry extension we do not process), an empty GeneralNames.
        let entry = TestPKI.TestExtension(oid: "2.5.29.29", critical: true, value: [0x30, 0x00])
        func crl(_ extensions: [TestPKI.TestExtension], entries: [TestPKI.TestExtension] = []) throws -> [UInt8] {
            try TestPKI.crl(
                issuer: name, key: lab.keys.pckCA, thisUpdate: lab.now - 60, nextUpdate: lab.now + 3_600,
                revoked: [[0x01, 0x02]], extensions: extensions, entryExtensions: entries)
        }
        let critical = #expect(throws: AttestationError.self) { try RevocationList(der: try crl([idp])) }
        #expect(critical?.code == .unsupported)
        #expect(critical?.step == .crl)
        let criticalEntry = #expect(throws: AttestationError.self) {
            try RevocationList(der: try crl([], entries: [entry]))
        }
        #expect(criticalEntry?.code == .unsupported)
        #expect(try RevocationList(der: try crl([soft])).revokedSerials.count == 1)
        // A critical reason code is understood.
        let reason = TestPKI.TestExtension(oid: "2.5.29.21", critical: true, value: [0x0A, 0x01, 0x01])
        #expect(try RevocationList(der: try crl([], entries: [reason])).revokedSerials.count == 1)
        // Through the verifier: the collateral's PCK CRL with a critical IDP.
        lab.expectFailure(try lab.collateral(pckCRL: try crl([idp])), .unsupported, .crl, "critical IDP in the PCK CRL")
    }
}
