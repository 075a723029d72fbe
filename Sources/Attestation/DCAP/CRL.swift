import Crypto
import SwiftASN1
import X509

/// A parsed certificate revocation list (RFC 5280 `CertificateList`).
///
/// Parsing does not check the signature; ``isSigned(by:)`` does.
public struct RevocationList: Sendable {
    /// The CRL as received.
    public let der: [UInt8]
    /// Who issued it.
    public let issuer: DistinguishedName
    /// `thisUpdate`, Unix seconds.
    public let thisUpdate: Int64
    /// `nextUpdate`, Unix seconds (required here: a CRL without one is never fresh).
    public let nextUpdate: Int64
    /// Serial numbers of revoked certificates (big-endian magnitudes without leading zeros).
    public let revokedSerials: [ArraySlice<UInt8>]
    let tbsBytes: ArraySlice<UInt8>
    let signature: ArraySlice<UInt8>

    static let ecdsaWithSHA256: ASN1ObjectIdentifier = "1.2.840.10045.4.3.2"

    /// Parses a DER CRL.
    public init(der: [UInt8]) throws(AttestationError) {
        do {
            let root = try DER.parse(der)
            var parsed:
                (
                    DistinguishedName, Int64, Int64?, [ArraySlice<UInt8>], ArraySlice<UInt8>, ArraySlice<UInt8>
                )?
            try DER.sequence(root, identifier: .sequence) { outer in
                guard let tbs = outer.next(), let algorithm = outer.next(), let signatureNode = outer.next() else {
                    throw ASN1Error.invalidASN1Object(reason: "CertificateList needs three fields")
                }
                let algorithmOID = try DER.sequence(algorithm, identifier: .sequence) { nodes in
                    guard let oid = nodes.next() else { throw ASN1Error.invalidASN1Object(reason: "empty algorithm") }
                    while nodes.next() != nil {}
                    return try ASN1ObjectIdentifier(derEncoded: oid)
                }
                guard algorithmOID == Self.ecdsaWithSHA256 else {
                    throw ASN1Error.invalidASN1Object(
                        reason: "CRL signature algorithm \(algorithmOID) is not ecdsa-with-SHA256")
                }
                let bits = try ASN1BitString(derEncoded: signatureNode)
                var issuer: DistinguishedName?
                var thisUpdate: Int64?
                var nextUpdate: Int64?
                var revoked: [ArraySlice<UInt8>] = []
                try DER.sequence(tbs, identifier: .sequence) { fields in
                    var node = fields.next()
                    if let n = node, n.identifier == .integer { node = fields.next() }  // version
                    guard node != nil else { throw ASN1Error.invalidASN1Object(reason: "CRL without signature field") }
                    guard let issuerNode = fields.next() else { throw ASN1Error.invalidASN1Object(reason: "no issuer") }
                    issuer = try DistinguishedName(derEncoded: issuerNode)
                    guard let thisNode = fields.next() else {
                        throw ASN1Error.invalidASN1Object(reason: "no thisUpdate")
                    }
                    thisUpdate = try Self.time(thisNode)
                    var next = fields.next()
                    if let n = next, n.identifier == .utcTime || n.identifier == .generalizedTime {
                        nextUpdate = try Self.time(n)
                        next = fields.next()
                    }
                    if let n = next, n.identifier == .sequence {
                        try DER.sequence(n, identifier: .sequence) { entries in
                            while let entry = entries.next() {
                                try DER.sequence(entry, identifier: .sequence) { parts in
                                    guard let serial = parts.next(), case .primitive(let bytes) = serial.content,
                                        serial.identifier == .integer
                                    else { throw ASN1Error.invalidASN1Object(reason: "bad revoked entry") }
                                    // A negative serial (invalid in certificates) matches nothing.
                                    if let first = bytes.first, first < 0x80 {
                                        revoked.append(Self.normalizedSerial(bytes))
                                    }
                                    _ = parts.next()  // revocationDate
                                    if let extensions = parts.next() {
                                        try Self.checkExtensions(extensions, understood: Self.entryExtensions)
                                    }
                                    while parts.next() != nil {}
                                }
                            }
                        }
                        next = fields.next()
                    }
                    if let n = next, n.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                        try DER.sequence(n, identifier: n.identifier) { wrapped in
                            guard let extensions = wrapped.next() else {
                                throw ASN1Error.invalidASN1Object(reason: "empty crlExtensions")
                            }
                            try Self.checkExtensions(extensions, understood: Self.crlExtensions)
                            while wrapped.next() != nil {}
                        }
                    }
                    while fields.next() != nil {}
                }
                guard let issuer, let thisUpdate else { throw ASN1Error.invalidASN1Object(reason: "incomplete CRL") }
                parsed = (issuer, thisUpdate, nextUpdate, revoked, tbs.encodedBytes, bits.bytes)
            }
            guard let parsed else { throw ASN1Error.invalidASN1Object(reason: "empty CRL") }
            guard let nextUpdate = parsed.2 else {
                throw AttestationError(.decodingFailed, step: .crl, "CRL has no nextUpdate")
            }
            self.der = der
            self.issuer = parsed.0
            self.thisUpdate = parsed.1
            self.nextUpdate = nextUpdate
            self.revokedSerials = parsed.3
            self.tbsBytes = parsed.4
            self.signature = parsed.5
        } catch let error as AttestationError {
            throw error
        } catch {
            throw AttestationError(.decodingFailed, step: .crl, "CRL is not valid DER: \(error)")
        }
    }

    /// Whether the CRL's ECDSA P-256 signature verifies under `key`.
    public func isSigned(by key: P256.Signing.PublicKey) -> Bool {
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
        return key.isValidSignature(signature, for: SHA256.hash(data: tbsBytes))
    }

    /// ``isSigned(by:)``, answered from `cache` when this CRL was already checked under `key`.
    func isSigned(by key: P256.Signing.PublicKey, keyID: Digest, cache: VerificationCache) -> Bool {
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
        return cache.isValid(signature: signature, digest: SHA256.hash(data: tbsBytes), key: key, keyID: keyID)
    }

    /// Whether `serial` (the certificate's serial number as a big-endian
    /// magnitude, leading zeros optional) is listed.
    public func isRevoked(serial: ArraySlice<UInt8>) -> Bool {
        let wanted = Self.normalizedSerial(serial)
        return revokedSerials.contains { $0.elementsEqual(wanted) }
    }

    /// CRL extensions we understand: CRL number, authority key identifier.
    static let crlExtensions: Set<ASN1ObjectIdentifier> = ["2.5.29.20", "2.5.29.35"]
    /// CRL entry extensions we understand: reason code, invalidity date.
    static let entryExtensions: Set<ASN1ObjectIdentifier> = ["2.5.29.21", "2.5.29.24"]

    /// Refuses a critical extension outside `understood` (RFC 5280 §5.2:
    /// a CRL with a critical extension the reader does not process is not
    /// to be used). `node` is the `Extensions` SEQUENCE.
    static func checkExtensions(_ node: ASN1Node, understood: Set<ASN1ObjectIdentifier>) throws {
        try DER.sequence(node, identifier: .sequence) { extensions in
            while let item = extensions.next() {
                try DER.sequence(item, identifier: .sequence) { parts in
                    guard let oidNode = parts.next() else {
                        throw ASN1Error.invalidASN1Object(reason: "empty extension")
                    }
                    let oid = try ASN1ObjectIdentifier(derEncoded: oidNode)
                    var critical = false
                    if let flag = parts.next(), flag.identifier == .boolean { critical = try Bool(derEncoded: flag) }
                    while parts.next() != nil {}
                    if critical, !understood.contains(oid) {
                        throw AttestationError(
                            .unsupported, step: .crl, "the CRL has a critical extension \(oid) that is not understood")
                    }
                }
            }
        }
    }

    static func normalizedSerial(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var start = bytes.startIndex
        while start < bytes.endIndex - 1, bytes[start] == 0 { start += 1 }
        return bytes[start...]
    }

    static func time(_ node: ASN1Node) throws -> Int64 {
        if node.identifier == .utcTime {
            let t = try UTCTime(derEncoded: node)
            return unixSeconds(
                year: t.year, month: t.month, day: t.day, hour: t.hours, minute: t.minutes, second: t.seconds)
        }
        let t = try GeneralizedTime(derEncoded: node)
        return unixSeconds(
            year: t.year, month: t.month, day: t.day, hour: t.hours, minute: t.minutes, second: Int(t.seconds))
    }
}
