import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import Attestation

/// Every parser error path, on edits of the real v4 quote.
@Suite("quote parser")
struct QuoteParserTests {
    static let v4: [UInt8] = (try? TestData.bytes(TestData.v4Quote)) ?? []

    static func edited(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
        var bytes = v4
        edit(&bytes)
        return bytes
    }

    static func putU16(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value & 0xFF)
        bytes[offset + 1] = UInt8(value >> 8)
    }

    static func putU32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    /// Offsets in the v4 test quote.
    static let signatureDataLength = 632
    static let certificationType = 632 + 4 + 128
    static let certificationSize = certificationType + 2
    static let authLength = certificationSize + 4 + 384 + 64
    static let innerType = authLength + 2 + 32
    static let innerSize = innerType + 2

    static func v5(bodyType: UInt16, size: UInt32) -> [UInt8] {
        var bytes = Array(v4[0..<48])
        putU16(&bytes, 0, 5)
        bytes += [UInt8(bodyType & 0xFF), UInt8(bodyType >> 8)]
        bytes += [0, 0, 0, 0]
        putU32(&bytes, 50, size)
        bytes += v4[48...]
        return bytes
    }

    static let cases: [(String, [UInt8], AttestationError.Code)] = [
        ("empty", [], .truncated),
        ("header cut short", Array(v4.prefix(47)), .truncated),
        ("SGX TEE type", edited { putU32(&$0, 4, 0) }, .notTDXQuote),
        ("unknown TEE type", edited { putU32(&$0, 4, 0x42) }, .notTDXQuote),
        ("TDX quote version 3", edited { putU16(&$0, 0, 3) }, .unsupported),
        ("attestation key type 3", edited { putU16(&$0, 2, 3) }, .unsupported),
        ("v5 body type 1 (SGX)", v5(bodyType: 1, size: 384), .notTDXQuote),
        ("v5 body type 4 with a TD 1.0 size", v5(bodyType: 4, size: 584), .malformed),
        ("v5 body type 5", v5(bodyType: 5, size: 584), .unsupported),
        ("v5 body size that does not match its type", v5(bodyType: 2, size: 648), .malformed),
        ("signature data longer than the quote", edited { putU32(&$0, signatureDataLength, 100_000) }, .truncated),
        ("certification data type 5 at the top", edited { putU16(&$0, certificationType, 5) }, .unsupported),
        ("certification data size too large", edited { putU32(&$0, certificationSize, 4167) }, .truncated),
        ("QE auth data longer than what is left", edited { putU16(&$0, authLength, 60_000) }, .truncated),
        ("nested certification type 4", edited { putU16(&$0, innerType, 4) }, .unsupported),
        ("nested certification size past the end", edited { putU32(&$0, innerSize, 3679) }, .truncated),
        (
            "certification data size that cuts the PCK chain", edited { putU32(&$0, certificationSize, 4000) },
            .truncated
        ),
    ]

    @Test("malformed quotes are error values naming the problem", arguments: 0..<cases.count)
    func malformed(index: Int) {
        let (name, bytes, code) = Self.cases[index]
        let error = #expect(throws: AttestationError.self, "\(name)") { try Quote(bytes: bytes) }
        #expect(error?.code == code, "\(name): \(String(describing: error))")
        #expect(error?.step == .parseQuote, "\(name)")
    }

    @Test("padding is optional: the quote without it parses the same")
    func padding() throws {
        let full = try Quote(bytes: Self.v4)
        let trimmed = try Quote(bytes: Array(Self.v4.dropLast(full.paddingLength)))
        #expect(trimmed.report == full.report)
        #expect(trimmed.paddingLength == 0)
        let longer = try Quote(bytes: Self.v4 + [0, 0, 0])
        #expect(longer.paddingLength == full.paddingLength + 3)
    }

    @Test("trailing bytes after the signature data, zero or not, are tolerated and the quote still verifies")
    func trailingBytes() throws {
        let full = try Quote(bytes: Self.v4)
        let collateral = try TestData.collateral(TestData.v4Collateral)
        for tail: [UInt8] in [[1], [0xFF, 0, 7], [UInt8](repeating: 0xA5, count: 300)] {
            let quote = try Quote(bytes: Self.v4 + tail)
            #expect(quote.paddingLength == full.paddingLength + tail.count)
            #expect(
                try QuoteVerifier().verify(quote: quote, collateral: collateral, now: TestData.v4Now).status
                    == .upToDate)
        }
    }

    @Test(
        "extra bytes inside the signature data after the type-6 certification data, or after the PCK chain, are tolerated"
    )
    func extraSignatureDataBytes() throws {
        let full = try Quote(bytes: Self.v4)
        let signatureEnd = Self.v4.count - full.paddingLength
        // After the type-6 certification data: the signature data grows.
        var after = Array(Self.v4[0..<signatureEnd]) + [0xDE, 0xAD, 0xBE, 0xEF]
        Self.putU32(&after, Self.signatureDataLength, UInt32(signatureEnd - Self.signatureDataLength - 4 + 4))
        let parsed = try Quote(bytes: after)
        #expect(parsed.signatureData.pckChainPEM == full.signatureData.pckChainPEM)
        #expect(parsed.paddingLength == 0)
        // After the PCK chain inside the type-6 data: both sizes grow.
        var inside = after
        let size = UInt32(signatureEnd - Self.certificationSize - 4 + 4)
        Self.putU32(&inside, Self.certificationSize, size)
        #expect(try Quote(bytes: inside).signatureData.pckChainPEM == full.signatureData.pckChainPEM)
        // One byte too many is still a truncation.
        Self.putU32(&inside, Self.certificationSize, size + 1)
        #expect(throws: AttestationError.self) { try Quote(bytes: inside) }
        let collateral = try TestData.collateral(TestData.v4Collateral)
        #expect(
            try QuoteVerifier().verify(quote: after, collateral: collateral, now: TestData.v4Now).status == .upToDate)
    }

    @Test("error descriptions name the step and the code")
    func descriptions() {
        let error = AttestationError(.crlExpired, step: .crl, "the root CA CRL expired")
        #expect(error.description == "CRL: the root CA CRL expired [crlExpired]")
        #expect(error == AttestationError(.crlExpired, step: .crl, "other words"))
        #expect(error != AttestationError(.crlExpired, step: .tcbInfo, "the root CA CRL expired"))
    }
}

@Suite("PEM, CRL and collateral decoding")
struct DecodingTests {
    static let chain = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"

    @Test("strict PEM: accepted forms")
    func pemAccepted() throws {
        #expect(try PEM.certificates(Array(Self.chain.utf8), step: .pckChain) == [[0, 1, 2]])
        #expect(try PEM.certificates(Array(Self.chain.utf8) + [0], step: .pckChain) == [[0, 1, 2]])
        let crlf = Self.chain.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(try PEM.certificates(Array(crlf.utf8), step: .pckChain) == [[0, 1, 2]])
        #expect(try PEM.certificates(Array((Self.chain + Self.chain).utf8), step: .pckChain).count == 2)
        #expect(PEM.base64Decode(Array("AAE=".utf8)[...]) == [0, 1])
        #expect(PEM.base64Decode(Array("AA==".utf8)[...]) == [0])
        #expect(PEM.base64Encode([0, 1]) == "AAE=")
    }

    @Test(
        "strict PEM: refused forms",
        arguments: [
            "", "\0", "junk", " -----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----AAEC\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n\nAAEC\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAEC\n", "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\n",
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----x",
            "-----BEGIN CERTIFICATE-----\nAAE\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAF=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nA=E=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAA*C\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAEC \n-----END CERTIFICATE-----\n",
        ])
    func pemRefused(text: String) {
        let error = #expect(throws: AttestationError.self, "\(text.debugDescription)") {
            try PEM.certificates(Array(text.utf8), step: .tcbInfo)
        }
        #expect(error?.code == .decodingFailed)
        #expect(error?.step == .tcbInfo)
    }

    @Test("CRLs: the real ones parse; garbage, other algorithms and a missing nextUpdate do not")
    func crls() throws {
        let collateral = try TestData.collateral(TestData.v4Collateral)
        let root = try RevocationList(der: collateral.rootCACRL)
        #expect(root.nextUpdate == 1_775_215_317)
        let pck = try RevocationList(der: collateral.pckCRL)
        #expect(pck.revokedSerials.count > 10)
        #expect(pck.thisUpdate < pck.nextUpdate)
        for bad in [[UInt8](), [0x30, 0x00], [0x02, 0x01, 0x00], Array(collateral.rootCACRL.dropLast(5))] {
            let error = #expect(throws: AttestationError.self) { try RevocationList(der: bad) }
            #expect(error?.step == .crl)
            #expect(error?.code == .decodingFailed)
        }
        // ecdsa-with-SHA384 in the outer algorithm.
        var otherAlgorithm = collateral.rootCACRL
        let oid: [UInt8] = [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        let at = try #require(
            (0...(otherAlgorithm.count - oid.count)).last { Array(otherAlgorithm[$0..<($0 + oid.count)]) == oid })
        otherAlgorithm[at + oid.count - 1] = 0x03
        let error = #expect(throws: AttestationError.self) { try RevocationList(der: otherAlgorithm) }
        #expect(error?.reason.contains("ecdsa-with-SHA256") == true)
    }

    @Test("collateral JSON: not JSON, not an object, missing or non-string fields, bad hex")
    func collateralJSON() throws {
        let good =
            try JSONSerialization.jsonObject(with: Data(try TestData.bytes(TestData.v4Collateral))) as? [String: Any]
        let fields = try #require(good)
        func encode(_ object: Any) throws -> Data { try JSONSerialization.data(withJSONObject: object) }
        var missing = fields
        missing.removeValue(forKey: "pck_crl")
        var number = fields
        number["tcb_info"] = 5
        var badHex = fields
        badHex["tcb_info_signature"] = "zz"
        let cases: [Data] = [
            Data("not json".utf8), Data("[1,2]".utf8), try encode(missing), try encode(number), try encode(badHex),
        ]
        for data in cases {
            let error = #expect(throws: AttestationError.self) { try Collateral(json: data) }
            #expect(error?.step == .parseCollateral)
        }
        // Round trip through the dcap-qvl form.
        let collateral = try Collateral(json: try TestData.bytes(TestData.v4Collateral))
        #expect(try Collateral(json: collateral.jsonData()) == collateral)
    }

    @Test("ISO 8601 dates and the calendar helpers")
    func dates() {
        #expect(parseISO8601("2025-06-19T10:16:03Z") == 1_750_328_163)
        #expect(parseISO8601("2025-06-19T10:16:03.123Z") == 1_750_328_163)
        #expect(formatISO8601(1_750_328_163) == "2025-06-19T10:16:03Z")
        for bad in ["", "2025-06-19 10:16:03Z", "2025-13-19T10:16:03Z", "2025-06-19T10:16:03", "2025-06-19T10:16:03.Z"]
        {
            #expect(parseISO8601(bad) == nil, "\(bad)")
        }
        for seconds: Int64 in [0, 951_782_400, 4_102_444_800, -86_400] {
            let c = civil(seconds)
            #expect(
                unixSeconds(year: c.year, month: c.month, day: c.day, hour: c.hour, minute: c.minute, second: c.second)
                    == seconds)
        }
    }

    @Test("PCK extensions: the real PCK certificate's, a round trip, and malformed values")
    func pckExtensions() throws {
        let quote = try Quote(bytes: try TestData.bytes(TestData.v4Quote))
        let ext = try quote.unverifiedPCKExtensions()
        #expect(ext.pceSVN == 11)
        #expect(ext.tcbComponents == [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(ext.pceID == [0, 0])
        #expect(ext.sgxType == 1)
        #expect(ext.ppid.count == 16)
        let again = try PCKExtensions(derEncoded: try ext.derEncoded()[...])
        #expect(again == ext)
        for bad: [UInt8] in [[], [0x30, 0x00], [0x04, 0x00], [0x30, 0x03, 0x30, 0x01, 0x06]] {
            let error = #expect(throws: AttestationError.self) { try PCKExtensions(derEncoded: bad[...]) }
            #expect(error?.step == .pckChain)
        }
    }
}
