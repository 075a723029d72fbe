import Foundation
import KeyrackCore

/// A TCB status, as Intel's collateral names them.
public enum TCBStatus: String, Sendable, Hashable, Codable, CaseIterable {
    /// The platform is patched.
    case upToDate = "UpToDate"
    /// Patched, but software mitigations are needed.
    case swHardeningNeeded = "SWHardeningNeeded"
    /// Patched, but the platform's configuration needs changes.
    case configurationNeeded = "ConfigurationNeeded"
    /// Both of the above.
    case configurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
    /// Missing security updates.
    case outOfDate = "OutOfDate"
    /// Missing updates and needs configuration changes.
    case outOfDateConfigurationNeeded = "OutOfDateConfigurationNeeded"
    /// The TCB level has been revoked: never accepted.
    case revoked = "Revoked"

    private var flags: (outOfDate: Bool, configuration: Bool, hardening: Bool, revoked: Bool) {
        switch self {
        case .upToDate: (false, false, false, false)
        case .swHardeningNeeded: (false, false, true, false)
        case .configurationNeeded: (false, true, false, false)
        case .configurationAndSWHardeningNeeded: (false, true, true, false)
        case .outOfDate: (true, false, false, false)
        case .outOfDateConfigurationNeeded: (true, true, false, false)
        case .revoked: (false, false, false, true)
        }
    }

    /// The status that carries the concerns of both (the platform's and the
    /// QE's or TDX module's levels combine this way).
    public func merged(with other: TCBStatus) -> TCBStatus {
        let a = flags
        let b = other.flags
        if a.revoked || b.revoked { return .revoked }
        let outOfDate = a.outOfDate || b.outOfDate
        let configuration = a.configuration || b.configuration
        let hardening = a.hardening || b.hardening
        switch (outOfDate, configuration, hardening) {
        case (true, true, _): return .outOfDateConfigurationNeeded
        case (true, false, _): return .outOfDate
        case (false, true, true): return .configurationAndSWHardeningNeeded
        case (false, true, false): return .configurationNeeded
        case (false, false, true): return .swHardeningNeeded
        case (false, false, false): return .upToDate
        }
    }
}

/// Intel's TDX TCB info (version 3), decoded from the signed JSON.
public struct TCBInfo: Sendable, Hashable {
    /// `"TDX"` for TDX platforms.
    public let id: String
    /// Format version (3 for TDX).
    public let version: Int
    /// Issue date, Unix seconds.
    public let issueDate: Int64
    /// Next update, Unix seconds: the TCB info is stale after it.
    public let nextUpdate: Int64
    /// The platform family this TCB info is for, 6 bytes.
    public let fmspc: [UInt8]
    /// The PCE id, 2 bytes.
    public let pceID: [UInt8]
    /// The TDX module's expected signer and attributes (used when TEE_TCB_SVN[1] is 0).
    public let tdxModule: ModuleIdentity?
    /// TDX module identities by id (`TDX_01`, ...), each with its own TCB levels.
    public let tdxModuleIdentities: [ModuleIdentity]
    /// The platform TCB levels, best first.
    public let tcbLevels: [Level]

    /// A TDX module's expected identity.
    public struct ModuleIdentity: Sendable, Hashable {
        /// `TDX_<version as two hex digits>`, or empty for `tdxModule`.
        public let id: String
        /// Expected MRSIGNERSEAM, 48 bytes.
        public let mrSigner: [UInt8]
        /// Expected SEAMATTRIBUTES under ``attributesMask``.
        public let attributes: [UInt8]
        /// Mask applied to SEAMATTRIBUTES before comparing.
        public let attributesMask: [UInt8]
        /// The module's TCB levels (by ISVSVN), best first.
        public let tcbLevels: [ModuleLevel]
    }

    /// A TDX module TCB level.
    public struct ModuleLevel: Sendable, Hashable {
        /// Minimum TEE_TCB_SVN[0].
        public let isvSVN: Int
        /// The status at this level.
        public let status: TCBStatus
        /// Intel security advisories that apply.
        public let advisoryIDs: [String]
    }

    /// A platform TCB level.
    public struct Level: Sendable, Hashable {
        /// Minimum SGX TCB component SVNs, 16.
        public let sgxComponents: [UInt8]
        /// Minimum PCESVN.
        public let pceSVN: Int
        /// Minimum TDX TCB component SVNs (TEE_TCB_SVN), 16.
        public let tdxComponents: [UInt8]
        /// The status at this level.
        public let status: TCBStatus
        /// Intel security advisories that apply.
        public let advisoryIDs: [String]
    }

    /// Decodes TCB info JSON.
    public init(json: String) throws(AttestationError) {
        func fail(_ reason: String) -> AttestationError {
            AttestationError(.decodingFailed, step: .tcbInfo, "TCB info JSON does not decode: \(reason)")
        }
        let root: JSON
        do {
            root = try JSON.parse(json)
        } catch {
            throw fail(error.description)
        }
        let d = CollateralFields(root, fail: fail)
        guard let issue = parseISO8601(try d.string("issueDate")), let next = parseISO8601(try d.string("nextUpdate"))
        else { throw fail("dates are not ISO 8601") }
        func module(_ m: JSON, id: String) throws(AttestationError) -> ModuleIdentity {
            let f = CollateralFields(m, fail: fail)
            var levels: [ModuleLevel] = []
            for l in try f.optionalArray("tcbLevels") {
                let lf = CollateralFields(l, fail: fail)
                levels.append(
                    ModuleLevel(
                        isvSVN: try CollateralFields(try lf.field("tcb"), fail: fail).int("isvsvn"),
                        status: try lf.status("tcbStatus"), advisoryIDs: try lf.strings("advisoryIDs")))
            }
            return ModuleIdentity(
                id: id, mrSigner: try f.hex("mrsigner", 48), attributes: try f.hex("attributes", 8),
                attributesMask: try f.hex("attributesMask", 8), tcbLevels: levels)
        }
        var levels: [Level] = []
        for l in try d.array("tcbLevels") {
            let lf = CollateralFields(l, fail: fail)
            let tcb = CollateralFields(try lf.field("tcb"), fail: fail)
            let sgx = try tcb.components("sgxtcbcomponents")
            let tdx = try tcb.optionalArray("tdxtcbcomponents").isEmpty ? [] : try tcb.components("tdxtcbcomponents")
            guard sgx.count == 16, tdx.count == 16 || tdx.isEmpty else {
                throw fail("a TCB level does not have 16 components")
            }
            levels.append(
                Level(
                    sgxComponents: sgx, pceSVN: try tcb.int("pcesvn"), tdxComponents: tdx,
                    status: try lf.status("tcbStatus"), advisoryIDs: try lf.strings("advisoryIDs")))
        }
        var identities: [ModuleIdentity] = []
        for m in try d.optionalArray("tdxModuleIdentities") {
            identities.append(try module(m, id: try CollateralFields(m, fail: fail).string("id")))
        }
        self.id = try d.string("id")
        self.version = try d.int("version")
        self.issueDate = issue
        self.nextUpdate = next
        self.fmspc = try d.hex("fmspc", 6)
        self.pceID = try d.hex("pceId", 2)
        if let m = root["tdxModule"] { self.tdxModule = try module(m, id: "") } else { self.tdxModule = nil }
        self.tdxModuleIdentities = identities
        self.tcbLevels = levels
    }
}

/// Typed access to the fields of a collateral JSON object, failing with the
/// step's error.
struct CollateralFields {
    let value: JSON
    let fail: (String) -> AttestationError

    init(_ value: JSON, fail: @escaping (String) -> AttestationError) {
        self.value = value
        self.fail = fail
    }

    func field(_ key: String) throws(AttestationError) -> JSON {
        guard let field = value[key] else { throw fail("missing \(key)") }
        return field
    }

    func string(_ key: String) throws(AttestationError) -> String {
        guard let s = try field(key).string else { throw fail("\(key) is not a string") }
        return s
    }

    func int(_ key: String) throws(AttestationError) -> Int {
        guard let i = try field(key).integer else { throw fail("\(key) is not an integer") }
        return i
    }

    func array(_ key: String) throws(AttestationError) -> [JSON] {
        guard let a = try field(key).array else { throw fail("\(key) is not an array") }
        return a
    }

    func optionalArray(_ key: String) throws(AttestationError) -> [JSON] {
        value[key] == nil ? [] : try array(key)
    }

    func hex(_ key: String, _ count: Int) throws(AttestationError) -> [UInt8] {
        guard let bytes = [UInt8](hex: try string(key)), bytes.count == count else {
            throw fail("\(key) is not \(count) bytes of hex")
        }
        return bytes
    }

    func status(_ key: String) throws(AttestationError) -> TCBStatus {
        let text = try string(key)
        guard let status = TCBStatus(rawValue: text) else { throw fail("unknown TCB status \(text)") }
        return status
    }

    func strings(_ key: String) throws(AttestationError) -> [String] {
        var out: [String] = []
        for element in try optionalArray(key) {
            guard let s = element.string else { throw fail("\(key) holds a non-string") }
            out.append(s)
        }
        return out
    }

    func components(_ key: String) throws(AttestationError) -> [UInt8] {
        var out: [UInt8] = []
        for element in try array(key) {
            guard let svn = element["svn"]?.integer, (0...255).contains(svn) else {
                throw fail("\(key) holds a component without an 8-bit svn")
            }
            out.append(UInt8(svn))
        }
        return out
    }
}

/// Intel's QE identity (the TD quoting enclave's expected identity), decoded
/// from the signed JSON.
public struct QEIdentity: Sendable, Hashable {
    /// `"TD_QE"` for the TDX quoting enclave.
    public let id: String
    /// Format version (2).
    public let version: Int
    /// Issue date, Unix seconds.
    public let issueDate: Int64
    /// Next update, Unix seconds.
    public let nextUpdate: Int64
    /// Expected MISCSELECT under ``miscSelectMask``.
    public let miscSelect: UInt32
    /// Mask for MISCSELECT.
    public let miscSelectMask: UInt32
    /// Expected ATTRIBUTES under ``attributesMask``, 16 bytes.
    public let attributes: [UInt8]
    /// Mask for ATTRIBUTES, 16 bytes.
    public let attributesMask: [UInt8]
    /// Expected MRSIGNER, 32 bytes.
    public let mrSigner: [UInt8]
    /// Expected ISVPRODID.
    public let isvProdID: UInt16
    /// The QE's TCB levels by ISVSVN, best first.
    public let tcbLevels: [TCBInfo.ModuleLevel]

    /// Decodes QE identity JSON.
    public init(json: String) throws(AttestationError) {
        func fail(_ reason: String) -> AttestationError {
            AttestationError(.decodingFailed, step: .qeIdentity, "QE identity JSON does not decode: \(reason)")
        }
        let root: JSON
        do {
            root = try JSON.parse(json)
        } catch {
            throw fail(error.description)
        }
        let d = CollateralFields(root, fail: fail)
        guard let issue = parseISO8601(try d.string("issueDate")), let next = parseISO8601(try d.string("nextUpdate"))
        else { throw fail("dates are not ISO 8601") }
        let prodID = try d.int("isvprodid")
        guard (0...Int(UInt16.max)).contains(prodID) else { throw fail("isvprodid is out of range") }
        let misc = try d.hex("miscselect", 4)
        let miscMask = try d.hex("miscselectMask", 4)
        func le32(_ b: [UInt8]) -> UInt32 { UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24 }
        var levels: [TCBInfo.ModuleLevel] = []
        for l in try d.array("tcbLevels") {
            let lf = CollateralFields(l, fail: fail)
            levels.append(
                TCBInfo.ModuleLevel(
                    isvSVN: try CollateralFields(try lf.field("tcb"), fail: fail).int("isvsvn"),
                    status: try lf.status("tcbStatus"), advisoryIDs: try lf.strings("advisoryIDs")))
        }
        self.id = try d.string("id")
        self.version = try d.int("version")
        self.issueDate = issue
        self.nextUpdate = next
        self.miscSelect = le32(misc)
        self.miscSelectMask = le32(miscMask)
        self.attributes = try d.hex("attributes", 16)
        self.attributesMask = try d.hex("attributesMask", 16)
        self.mrSigner = try d.hex("mrsigner", 32)
        self.isvProdID = UInt16(prodID)
        self.tcbLevels = levels
    }
}
