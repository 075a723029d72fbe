import SwiftASN1

/// The Intel SGX extensions of a PCK certificate (OID 1.2.840.113741.1.13.1),
/// which tell which platform and at which TCB level the PCK key was issued.
public struct PCKExtensions: Sendable, Hashable {
    /// The platform provisioning id, 16 bytes.
    public let ppid: [UInt8]
    /// The 16 SGX TCB component SVNs (`…13.1.2.1` … `…13.1.2.16`).
    public let tcbComponents: [UInt8]
    /// The PCE security version (`…13.1.2.17`).
    public let pceSVN: UInt16
    /// CPUSVN as one 16-byte value (`…13.1.2.18`).
    public let cpuSVN: [UInt8]
    /// The PCE id, 2 bytes.
    public let pceID: [UInt8]
    /// The family-model-stepping-platform-customSKU, 6 bytes: the key by
    /// which TCB info is looked up.
    public let fmspc: [UInt8]
    /// SGX type (0 standard, 1 scalable, 2 scalable with integrity).
    public let sgxType: Int

    /// The SGX extension's OID.
    public static let oid: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1"
    private static let ppidOID: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1.1"
    private static let tcbOID: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1.2"
    private static let pceIDOID: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1.3"
    private static let fmspcOID: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1.4"
    private static let sgxTypeOID: ASN1ObjectIdentifier = "1.2.840.113741.1.13.1.5"
    /// `…13.1.2.1` … `…13.1.2.18`.
    private static let tcbEntryOIDs: [ASN1ObjectIdentifier] = (1...18).map {
        ASN1ObjectIdentifier(stringLiteral: "1.2.840.113741.1.13.1.2.\($0)")
    }

    /// Creates the value from its parts (the software TEE uses this to issue certificates).
    public init(
        ppid: [UInt8], tcbComponents: [UInt8], pceSVN: UInt16, cpuSVN: [UInt8], pceID: [UInt8], fmspc: [UInt8],
        sgxType: Int
    ) {
        self.ppid = ppid
        self.tcbComponents = tcbComponents
        self.pceSVN = pceSVN
        self.cpuSVN = cpuSVN
        self.pceID = pceID
        self.fmspc = fmspc
        self.sgxType = sgxType
    }

    /// Parses the DER value of the SGX extension.
    public init(derEncoded value: ArraySlice<UInt8>) throws(AttestationError) {
        do {
            let root = try DER.parse(value)
            var ppid: [UInt8]?
            var tcb: ([UInt8], UInt16, [UInt8])?
            var pceID: [UInt8]?
            var fmspc: [UInt8]?
            var sgxType: Int?
            try DER.sequence(root, identifier: .sequence) { items in
                while let item = items.next() {
                    try DER.sequence(item, identifier: .sequence) { pair in
                        guard let oidNode = pair.next(), let valueNode = pair.next() else {
                            throw ASN1Error.invalidASN1Object(reason: "SGX extension entry without a value")
                        }
                        while pair.next() != nil {}
                        let oid = try ASN1ObjectIdentifier(derEncoded: oidNode)
                        switch oid {
                        case Self.ppidOID: ppid = try Self.octets(valueNode, count: 16)
                        case Self.tcbOID: tcb = try Self.parseTCB(valueNode)
                        case Self.pceIDOID: pceID = try Self.octets(valueNode, count: 2)
                        case Self.fmspcOID: fmspc = try Self.octets(valueNode, count: 6)
                        case Self.sgxTypeOID:
                            guard case .primitive(let bytes) = valueNode.content, valueNode.identifier == .enumerated
                            else { throw ASN1Error.invalidASN1Object(reason: "SGX type is not ENUMERATED") }
                            sgxType = try Int(derIntegerBytes: bytes)
                        default: break
                        }
                    }
                }
            }
            guard let ppid, let tcb, let pceID, let fmspc, let sgxType else {
                throw AttestationError(
                    .decodingFailed, step: .pckChain, "the PCK certificate's SGX extension lacks a required field")
            }
            self.init(
                ppid: ppid, tcbComponents: tcb.0, pceSVN: tcb.1, cpuSVN: tcb.2, pceID: pceID, fmspc: fmspc,
                sgxType: sgxType)
        } catch let error as AttestationError {
            throw error
        } catch {
            throw AttestationError(
                .decodingFailed, step: .pckChain, "the PCK certificate's SGX extension is malformed: \(error)")
        }
    }

    private static func octets(_ node: ASN1Node, count: Int) throws -> [UInt8] {
        let value = try ASN1OctetString(derEncoded: node)
        guard value.bytes.count == count else {
            throw ASN1Error.invalidASN1Object(reason: "expected \(count) bytes, found \(value.bytes.count)")
        }
        return Array(value.bytes)
    }

    private static func parseTCB(_ node: ASN1Node) throws -> ([UInt8], UInt16, [UInt8]) {
        var components = [UInt8](repeating: 0, count: 16)
        var seen = Set<Int>()
        var pceSVN: UInt16?
        var cpuSVN: [UInt8]?
        try DER.sequence(node, identifier: .sequence) { items in
            while let item = items.next() {
                try DER.sequence(item, identifier: .sequence) { pair in
                    guard let oidNode = pair.next(), let valueNode = pair.next() else {
                        throw ASN1Error.invalidASN1Object(reason: "TCB entry without a value")
                    }
                    let oid = try ASN1ObjectIdentifier(derEncoded: oidNode)
                    guard let position = Self.tcbEntryOIDs.firstIndex(of: oid) else { return }
                    let index = position + 1
                    switch index {
                    case 1...16:
                        components[index - 1] = try UInt8(derEncoded: valueNode)
                        seen.insert(index)
                    case 17: pceSVN = try UInt16(derEncoded: valueNode)
                    case 18: cpuSVN = try octets(valueNode, count: 16)
                    default: break
                    }
                }
            }
        }
        guard seen.count == 16, let pceSVN, let cpuSVN else {
            throw ASN1Error.invalidASN1Object(reason: "TCB lacks components, PCESVN or CPUSVN")
        }
        return (components, pceSVN, cpuSVN)
    }

    /// The DER value of the extension (for issuing test certificates).
    public func derEncoded() throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { s in
            try Self.entry(&s, Self.oid + "1") { try $0.serialize(ASN1OctetString(contentBytes: ppid[...])) }
            try Self.entry(&s, Self.oid + "2") { t in
                try t.appendConstructedNode(identifier: .sequence) { t in
                    for (i, svn) in tcbComponents.enumerated() {
                        try Self.entry(&t, Self.oid + "2.\(i + 1)") { try $0.serialize(Int(svn)) }
                    }
                    try Self.entry(&t, Self.oid + "2.17") { try $0.serialize(Int(pceSVN)) }
                    try Self.entry(&t, Self.oid + "2.18") {
                        try $0.serialize(ASN1OctetString(contentBytes: cpuSVN[...]))
                    }
                }
            }
            try Self.entry(&s, Self.oid + "3") { try $0.serialize(ASN1OctetString(contentBytes: pceID[...])) }
            try Self.entry(&s, Self.oid + "4") { try $0.serialize(ASN1OctetString(contentBytes: fmspc[...])) }
            try Self.entry(&s, Self.oid + "5") { s in
                try Int(sgxType).serialize(into: &s, withIdentifier: .enumerated)
            }
        }
        return serializer.serializedBytes
    }

    private static func entry(
        _ s: inout DER.Serializer, _ oid: ASN1ObjectIdentifier, _ value: (inout DER.Serializer) throws -> Void
    ) throws {
        try s.appendConstructedNode(identifier: .sequence) { s in
            try s.serialize(oid)
            try value(&s)
        }
    }
}

extension ASN1ObjectIdentifier {
    /// This OID with `arcs` appended (`arcs` like "2.17").
    static func + (lhs: ASN1ObjectIdentifier, arcs: String) -> ASN1ObjectIdentifier {
        ASN1ObjectIdentifier(stringLiteral: lhs.description + "." + arcs)
    }
}
