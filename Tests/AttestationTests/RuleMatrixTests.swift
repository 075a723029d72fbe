import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import Attestation

/// What a matrix case must give.
enum Outcome: Sendable, Equatable, CustomStringConvertible {
    case accepted(TCBStatus, [String])
    case refused(AttestationError.Code, AttestationError.Step)

    var description: String {
        switch self {
        case .accepted(let status, let ids): "accepted \(status.rawValue) \(ids)"
        case .refused(let code, let step): "refused \(code.rawValue) at \(step.rawValue)"
        }
    }
}

/// One software-TEE quote and collateral that exercises a rule, with the verdict it must get.
struct RuleCase: Sendable, CustomTestStringConvertible {
    let name: String
    var levels: String? = nil
    var shape = QuoteShape()
    var options = TestPlatformOptions()
    var allowServiceTD = false
    let expected: Outcome

    var testDescription: String { name }

    /// Quote, collateral and trust anchor (DER) for this case.
    func material() throws -> (quote: [UInt8], collateral: Collateral, root: [UInt8]) {
        var options = options
        if let levels { options.tcbLevels = levels }
        let keys = RuleMatrix.keys
        let pki = try TestPKI(keys: keys, options: options, now: RuleMatrix.now)
        let quote = try QuoteWriter.quote(
            keys: keys, pckChainPEM: try pki.pckChainPEM(), reportData: sampleReportData,
            measurements: SoftwareTEE.fixedMeasurements, debug: false, shape: shape)
        return (quote, pki.collateral, try TestPKI.der(pki.root))
    }

    /// Our verdict.
    func verdict() throws -> Outcome {
        let (quote, collateral, root) = try material()
        let verifier = QuoteVerifier(trustAnchor: try TrustAnchor(bytes: root), allowServiceTD: allowServiceTD)
        do {
            let verified = try verifier.verify(quote: quote, collateral: collateral, now: RuleMatrix.now)
            return .accepted(verified.status, verified.advisoryIDs)
        } catch {
            return .refused(error.code, error.step)
        }
    }
}

func svn(_ values: UInt8...) -> [UInt8] { values + [UInt8](repeating: 0, count: 16 - values.count) }

func shape(_ edit: (inout QuoteShape) -> Void) -> QuoteShape {
    var s = QuoteShape()
    edit(&s)
    return s
}

/// Every rule of "Rules to the letter", each reached with both outcomes.
enum RuleMatrix {
    static let now: Int64 = 1_780_000_000
    static let keys = TestPKIKeys()

    /// TDX_01 with an UpToDate level at ISVSVN 5 and an OutOfDate one at 2.
    static let twoModuleLevels = """
        "tdxModuleIdentities": [{"id": "TDX_01", "levels": [
          {"isvsvn": 5, "status": "UpToDate"},
          {"isvsvn": 2, "status": "OutOfDate", "advisories": ["INTEL-SA-M1"]}]}]
        """
    static let relaunchLevels = "{\(twoModuleLevels)}"
    static let relaunchConfigLevels = """
        {"tcbLevels": [{"status": "ConfigurationNeeded", "advisories": ["INTEL-SA-P1"]}], \(twoModuleLevels)}
        """
    static let td15 = shape {
        $0.version = 5
        $0.body = .td15
    }
    static func td15(launch: [UInt8], current: [UInt8]) -> QuoteShape {
        shape {
            $0.version = 5
            $0.body = .td15
            $0.teeTCBSVN = launch
            $0.teeTCBSVN2 = current
        }
    }
    static func attributes(_ value: UInt64, body: QuoteShape.Body = .td10) -> QuoteShape {
        shape {
            $0.tdAttributes = value
            if body != .td10 { $0.version = 5 }
            $0.body = body
        }
    }
    static let sept = TDAttributes.septVEDisable
    static let serviceTD = shape {
        $0.version = 5
        $0.body = .td15
        $0.mrServiceTD = [UInt8](repeating: 0x11, count: 48)
    }
    /// The platform's level in Intel's form, without its tcbDate.
    static let levelWithoutDate: String = {
        func components(_ svns: [UInt8]) -> String { "[" + svns.map { "{\"svn\":\($0)}" }.joined(separator: ",") + "]" }
        return """
            {"tcb": {"sgxtcbcomponents": \(components(TestPlatform.sgxComponents)), "pcesvn": \(TestPlatform.pceSVN), \
            "tdxtcbcomponents": \(components(TestPlatform.tdxComponents))}, "tcbStatus": "UpToDate"}
            """
    }()
    static let upToDate = Outcome.accepted(.upToDate, [])
    static func refused(_ code: AttestationError.Code, _ step: AttestationError.Step = .tcbStatus) -> Outcome {
        .refused(code, step)
    }

    static let cases: [RuleCase] = [
        RuleCase(name: "baseline: v4 TD 1.0, SEPT_VE_DISABLE only", expected: upToDate),
        // TD attributes.
        RuleCase(name: "DEBUG", shape: attributes(sept | 1), expected: refused(.debugTD, .tdAttributes)),
        RuleCase(name: "profiling bit 4", shape: attributes(sept | 0x10), expected: refused(.debugTD, .tdAttributes)),
        RuleCase(name: "profiling bit 6", shape: attributes(sept | 0x40), expected: refused(.debugTD, .tdAttributes)),
        RuleCase(
            name: "reserved bit 1", shape: attributes(sept | 0x2), expected: refused(.tdAttributeRefused, .tdAttributes)
        ),
        RuleCase(
            name: "reserved bit 7", shape: attributes(sept | 0x80),
            expected: refused(.tdAttributeRefused, .tdAttributes)
        ),
        RuleCase(
            name: "reserved bit 24", shape: attributes(sept | 1 << 24),
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "reserved bit 40", shape: attributes(sept | 1 << 40),
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "MIGRATABLE", shape: attributes(sept | TDAttributes.migratable),
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "SERVTD_EXT on TD 1.0", shape: attributes(sept | TDAttributes.serviceTDExtension),
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "SERVTD_EXT on TD 1.5", shape: attributes(sept | TDAttributes.serviceTDExtension, body: .td15),
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "SERVTD_EXT on TD 1.5 with service TDs allowed",
            shape: attributes(sept | TDAttributes.serviceTDExtension, body: .td15), allowServiceTD: true,
            expected: upToDate),
        RuleCase(
            name: "SEPT_VE_DISABLE clear", shape: attributes(0), expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "PKS, PERFMON and the other defined bits",
            shape: attributes(
                sept | TDAttributes.pks | TDAttributes.perfmon | 1 << 16 | 0x7C_0000 | 1 << 27 | 1 << 31
                    | 1 << 62),
            expected: upToDate),
        // TD 1.5 bodies.
        RuleCase(name: "v5 TD 1.0 body", shape: shape { $0.version = 5 }, expected: upToDate),
        RuleCase(name: "v5 TD 1.5 body", shape: td15, expected: upToDate),
        RuleCase(
            name: "v5 TD 1.5 ex body (type 4)",
            shape: shape {
                $0.version = 5
                $0.body = .td15ex
            }, expected: upToDate),
        RuleCase(
            name: "MRSERVICETD not zero",
            shape: serviceTD,
            expected: refused(.tdAttributeRefused, .tdAttributes)),
        RuleCase(
            name: "MRSERVICETD not zero, service TDs allowed",
            shape: serviceTD,
            allowServiceTD: true, expected: upToDate),
        // TEE_TCB_SVN2: the current module.
        RuleCase(
            name: "TD 1.5 launch OutOfDate, current UpToDate: TDRelaunchAdvised", levels: relaunchLevels,
            shape: td15(launch: svn(2, 1, 3), current: svn(5, 1, 3)),
            expected: .accepted(.tdRelaunchAdvised, ["INTEL-SA-M1"])),
        RuleCase(
            name: "TD 1.5 relaunch on a ConfigurationNeeded platform", levels: relaunchConfigLevels,
            shape: td15(launch: svn(2, 1, 3), current: svn(5, 1, 3)),
            expected: .accepted(.tdRelaunchAdvisedConfigurationNeeded, ["INTEL-SA-P1", "INTEL-SA-M1"])),
        RuleCase(
            name: "TD 1.5 launch and current OutOfDate", levels: relaunchLevels,
            shape: td15(launch: svn(2, 1, 3), current: svn(3, 1, 3)), expected: .accepted(.outOfDate, ["INTEL-SA-M1"])
        ),
        RuleCase(
            name: "TD 1.5 launch UpToDate, current OutOfDate (launch status stands)", levels: relaunchLevels,
            shape: td15(launch: svn(5, 1, 3), current: svn(2, 1, 3)), expected: upToDate),
        RuleCase(
            name: "TD 1.5 current module Revoked",
            levels: """
                {"tdxModuleIdentities": [{"id": "TDX_01", "levels": [
                  {"isvsvn": 6, "status": "UpToDate"}, {"isvsvn": 5, "status": "Revoked"}]}]}
                """,
            shape: td15(launch: svn(6, 1, 3), current: svn(5, 1, 3)), expected: refused(.tcbRevoked)),
        RuleCase(
            name: "TD 1.5 current module with no identity", shape: td15(launch: svn(5, 1, 3), current: svn(5, 2, 3)),
            expected: refused(.noMatchingTCBLevel)),
        RuleCase(
            name: "TD 1.5 current module below every module level", levels: relaunchLevels,
            shape: td15(launch: svn(5, 1, 3), current: svn(1, 1, 3)), expected: refused(.noMatchingTCBLevel)),
        RuleCase(
            name: "TD 1.5 current platform components below every level",
            shape: td15(launch: svn(5, 1, 3), current: svn(5, 1, 2)), expected: refused(.noMatchingTCBLevel)),
        // TDX module.
        RuleCase(name: "no tdxModule", levels: #"{"tdxModule": null}"#, expected: refused(.decodingFailed)),
        RuleCase(
            name: "module version 2 without identity", shape: shape { $0.teeTCBSVN = svn(5, 2, 3) },
            expected: refused(.noMatchingTCBLevel)),
        RuleCase(
            name: "module version 2 with a lower-case identity id",
            levels: #"{"tdxModuleIdentities": [{"id": "tdx_02", "levels": [{"isvsvn": 1, "status": "UpToDate"}]}]}"#,
            shape: shape { $0.teeTCBSVN = svn(5, 2, 3) }, expected: upToDate),
        RuleCase(
            name: "module version 0: identities unused, TDX_00 ignored",
            levels: #"{"tdxModuleIdentities": [{"id": "TDX_00", "levels": [{"isvsvn": 9, "status": "Revoked"}]}]}"#,
            shape: shape { $0.teeTCBSVN = svn(5, 0, 3) }, expected: upToDate),
        RuleCase(
            name: "module version 0: TEE_TCB_SVN[0] compared with the platform level",
            shape: shape { $0.teeTCBSVN = svn(4, 0, 3) }, expected: refused(.noMatchingTCBLevel)),
        RuleCase(
            name: "module version 1, module SVN 4: TEE_TCB_SVN[0..1] not compared with the platform level",
            shape: shape { $0.teeTCBSVN = svn(4, 1, 3) }, expected: upToDate),
        RuleCase(
            name: "module version 1, module SVN 3: below the module identity's levels",
            shape: shape { $0.teeTCBSVN = svn(3, 1, 3) }, expected: refused(.noMatchingTCBLevel)),
        RuleCase(
            name: "module level OutOfDate lowers the platform", levels: relaunchLevels,
            shape: shape { $0.teeTCBSVN = svn(3, 1, 3) }, expected: .accepted(.outOfDate, ["INTEL-SA-M1"])),
        RuleCase(
            name: "MRSIGNERSEAM not the identity's",
            shape: shape { $0.mrSignerSeam = [UInt8](repeating: 1, count: 48) },
            expected: refused(.mismatch)),
        RuleCase(
            name: "SEAMATTRIBUTES bit outside the mask",
            levels:
                #"{"tdxModuleIdentities": [{"id": "TDX_01", "attributesMask": "FEFFFFFFFFFFFFFF", "levels": [{"isvsvn": 4, "status": "UpToDate"}]}]}"#,
            shape: shape { $0.seamAttributes = [1, 0, 0, 0, 0, 0, 0, 0] }, expected: refused(.mismatch)),
        RuleCase(
            name: "SEAMATTRIBUTES matching under the mask",
            levels:
                #"{"tdxModuleIdentities": [{"id": "TDX_01", "attributes": "0100000000000000", "levels": [{"isvsvn": 4, "status": "UpToDate"}]}]}"#,
            shape: shape { $0.seamAttributes = [1, 0, 0, 0, 0, 0, 0, 0] }, expected: upToDate),
        RuleCase(
            name: "SEAMATTRIBUTES not matching under the mask",
            levels:
                #"{"tdxModuleIdentities": [{"id": "TDX_01", "attributes": "0100000000000000", "levels": [{"isvsvn": 4, "status": "UpToDate"}]}]}"#,
            expected: refused(.mismatch)),
        RuleCase(
            name: "module level SWHardeningNeeded is not a module status",
            levels:
                #"{"tdxModuleIdentities": [{"id": "TDX_01", "levels": [{"isvsvn": 4, "status": "SWHardeningNeeded"}]}]}"#,
            expected: refused(.unrecognizedTCBStatus)),
        // TCB levels.
        RuleCase(
            name: "levels taken highest first, not in document order",
            levels: """
                {"tcbLevels": [{"tdx": [5, 0, 2], "status": "OutOfDate", "advisories": ["INTEL-SA-LOW"]},
                               {"tdx": [5, 0, 3], "status": "UpToDate"}]}
                """,
            expected: upToDate),
        RuleCase(
            name: "a lower level matches when the higher one is not met",
            levels: """
                {"tcbLevels": [{"tdx": [5, 0, 4], "status": "UpToDate"},
                               {"tdx": [5, 0, 2], "status": "OutOfDate", "advisories": ["INTEL-SA-LOW"]}]}
                """,
            expected: .accepted(.outOfDate, ["INTEL-SA-LOW"])),
        RuleCase(
            name: "no tcbEvaluationDataNumber", levels: #"{"tcbInfo": {"tcbEvaluationDataNumber": null}}"#,
            expected: refused(.decodingFailed, .tcbInfo)),
        RuleCase(
            name: "a garbage tcbDate on the matching level",
            levels: #"{"tcbLevels": [{"status": "UpToDate", "tcbDate": "yesterday"}]}"#,
            expected: refused(.decodingFailed, .tcbInfo)),
        RuleCase(
            name: "a tcbDate with an offset instead of Z",
            levels: #"{"tcbLevels": [{"status": "UpToDate", "tcbDate": "2024-03-13T00:00:00+01:00"}]}"#,
            expected: refused(.decodingFailed, .tcbInfo)),
        RuleCase(
            name: "a garbage tcbDate on a level that does not match",
            levels: """
                {"tcbLevels": [{"tdx": [5, 0, 3], "status": "UpToDate"},
                               {"tdx": [1], "status": "OutOfDate", "tcbDate": "2024-13-45"}]}
                """,
            expected: refused(.decodingFailed, .tcbInfo)),
        RuleCase(
            name: "a level without tcbDate",
            levels: "{\"tcbLevels\": [\(RuleMatrix.levelWithoutDate)]}",
            expected: refused(.decodingFailed, .tcbInfo)),
        // Status merging.
        RuleCase(
            name: "QE ConfigurationNeeded does not lower an UpToDate platform",
            levels: #"{"qeLevels": [{"isvsvn": 4, "status": "ConfigurationNeeded", "advisories": ["INTEL-SA-Q1"]}]}"#,
            expected: .accepted(.upToDate, ["INTEL-SA-Q1"])),
        RuleCase(
            name: "QE OutOfDate lowers an UpToDate platform",
            levels: #"{"qeLevels": [{"isvsvn": 4, "status": "OutOfDate", "advisories": ["INTEL-SA-Q1"]}]}"#,
            expected: .accepted(.outOfDate, ["INTEL-SA-Q1"])),
        RuleCase(
            name: "QE SWHardeningNeeded is not a QE status",
            levels: #"{"qeLevels": [{"isvsvn": 4, "status": "SWHardeningNeeded"}]}"#,
            expected: refused(.unrecognizedTCBStatus, .qeIdentityMatch)),
        RuleCase(
            name: "QE below every QE level", levels: #"{"qeLevels": [{"isvsvn": 5, "status": "UpToDate"}]}"#,
            expected: refused(.noMatchingTCBLevel, .qeIdentityMatch)),
        RuleCase(
            name: "platform SWHardeningNeeded", options: TestPlatformOptions(tcbStatus: .swHardeningNeeded),
            expected: .accepted(.swHardeningNeeded, TestPlatform.advisories)),
        RuleCase(
            name: "platform ConfigurationAndSWHardeningNeeded, QE OutOfDate",
            levels: """
                {"tcbLevels": [{"status": "ConfigurationAndSWHardeningNeeded", "advisories": ["INTEL-SA-P1"]}],
                 "qeLevels": [{"isvsvn": 4, "status": "OutOfDate", "advisories": ["INTEL-SA-Q1", "INTEL-SA-P1"]}]}
                """,
            expected: .accepted(.outOfDateConfigurationNeeded, ["INTEL-SA-P1", "INTEL-SA-Q1"])),
        RuleCase(
            name: "platform Revoked", options: TestPlatformOptions(tcbStatus: .revoked), expected: refused(.tcbRevoked)),
        RuleCase(
            name: "a relaunch status in a TCB info level is not a platform status",
            levels: #"{"tcbLevels": [{"status": "TDRelaunchAdvised"}]}"#, expected: refused(.unrecognizedTCBStatus)),
        RuleCase(
            name: "advisory ids are the union of platform, module and QE levels",
            levels: """
                {"tcbLevels": [{"status": "OutOfDate", "advisories": ["INTEL-SA-A", "INTEL-SA-B"]}],
                 "tdxModuleIdentities": [{"id": "TDX_01", "levels": [{"isvsvn": 4, "status": "OutOfDate", "advisories": ["INTEL-SA-B", "INTEL-SA-C"]}]}],
                 "qeLevels": [{"isvsvn": 4, "status": "UpToDate", "advisories": ["INTEL-SA-D"]}]}
                """,
            expected: .accepted(.outOfDate, ["INTEL-SA-A", "INTEL-SA-B", "INTEL-SA-C", "INTEL-SA-D"])),
        // Structure.
        RuleCase(
            name: "non-zero trailing bytes", shape: shape { $0.trailingBytes = [1, 2, 3, 0, 0xFF] }, expected: upToDate),
        // Collateral windows and revocation.
        RuleCase(
            name: "revoked PCK", options: TestPlatformOptions(revokedPCK: true),
            expected: refused(.certificateRevoked, .pckChain)),
        RuleCase(
            name: "expired collateral", options: TestPlatformOptions(expiredCollateral: true),
            expected: refused(.collateralExpired, .tcbInfo)),
        RuleCase(
            name: "collateral valid for 10 more seconds",
            options: {
                var o = TestPlatformOptions()
                o.collateralValidFor = 10
                return o
            }(), expected: upToDate),
        // Keyrack stricter than dcap-qvl (known differences).
        RuleCase(
            name: "PCE-ID not the TCB info's", levels: #"{"tcbInfo": {"pceId": "0100"}}"#,
            expected: refused(.mismatch)),
        // CRL validity at its boundary: still valid at exactly nextUpdate (Intel's QVL), expired a second later.
        RuleCase(name: "CRLs at exactly their nextUpdate", options: crlValid(for: 0), expected: upToDate),
        RuleCase(
            name: "CRLs a second past their nextUpdate", options: crlValid(for: -1),
            expected: refused(.crlExpired, .crl)),
        RuleCase(
            name: "CRLs issued a minute from now", options: crlIssued(ago: -60),
            expected: refused(.crlNotYetValid, .crl)),
        RuleCase(name: "CRLs issued at this instant", options: crlIssued(ago: 0), expected: upToDate),
    ]

    static func crlIssued(ago seconds: Int64) -> TestPlatformOptions {
        var options = TestPlatformOptions()
        options.crlIssuedAgo = seconds
        return options
    }

    static func crlValid(for seconds: Int64) -> TestPlatformOptions {
        var options = TestPlatformOptions()
        options.crlValidFor = seconds
        return options
    }
}

@Suite("rules to the letter: the software-TEE matrix")
struct RuleMatrixTests {
    @Test("each case gets its verdict", arguments: RuleMatrix.cases)
    func verdict(_ rule: RuleCase) throws {
        #expect(try rule.verdict() == rule.expected)
    }

    @Test("every TD attribute bit: defined bits other than the refused ones pass, the rest are refused")
    func everyAttributeBit() throws {
        let refusedDefined: Set<Int> = [0, 4, 5, 6, 17, 29]
        let defined: Set<Int> = Set([0, 4, 5, 6, 62, 63] + Array(16...22) + Array(27...31))
        for bit in 0..<64 where bit != 28 {
            let rule = RuleCase(
                name: "bit \(bit)", shape: RuleMatrix.attributes(RuleMatrix.sept | 1 << UInt64(bit)),
                expected: RuleMatrix.upToDate)
            let ok = try rule.verdict() == RuleMatrix.upToDate
            #expect(ok == (defined.contains(bit) && !refusedDefined.contains(bit)), "bit \(bit)")
        }
    }
}
