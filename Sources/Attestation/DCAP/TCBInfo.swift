import Foundation
import KeyrackCore

/// A TCB status, as Intel's collateral names them, plus the two TD 1.5
/// relaunch statuses a verdict can give.
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
    /// TD 1.5 only, a verdict and never a level: the TD launched on an
    /// out-of-date TDX module but its current module (TEE_TCB_SVN2) is not
    /// out of date; relaunching the TD brings it up to date.
    case tdRelaunchAdvised = "TDRelaunchAdvised"
    /// ``tdRelaunchAdvised`` where the platform also needs configuration changes.
    case tdRelaunchAdvisedConfigurationNeeded = "TDRelaunchAdvisedConfigurationNeeded"

    /// The statuses a platform TCB level of a TCB info may carry.
    static let platformLevelStatuses: Set<TCBStatus> = [
        .upToDate, .swHardeningNeeded, .configurationNeeded, .configurationAndSWHardeningNeeded, .outOfDate,
        .outOfDateConfigurationNeeded, .revoked,
    ]
    /// The statuses a TDX module identity level may carry (as Intel's QVL).
    static let moduleLevelStatuses: Set<TCBStatus> = [.upToDate, .outOfDate, .revoked]
    /// The statuses a QE identity level may carry (as Intel's QVL).
    static let qeLevelStatuses: Set<TCBStatus> = [
        .upToDate, .outOfDate, .configurationNeeded, .outOfDateConfigurationNeeded, .revoked,
    ]

    /// Whether the status asks for configuration changes.
    var needsConfiguration: Bool {
        switch self {
        case .configurationNeeded, .configurationAndSWHardeningNeeded, .outOfDateConfigurationNeeded,
            .tdRelaunchAdvisedConfigurationNeeded:
            true
        default: false
        }
    }

    /// This platform status converged with a component's (the TDX module's
    /// or the QE's), as Intel's QVL and dcap-qvl 0.7.0 do: only a component
    /// that is `OutOfDate` or `Revoked` changes the platform's status.
    public func converged(withComponent component: TCBStatus) -> TCBStatus {
        switch (component, self) {
        case (.revoked, _): .revoked
        case (.outOfDate, .upToDate), (.outOfDate, .swHardeningNeeded): .outOfDate
        case (.outOfDate, .configurationNeeded), (.outOfDate, .configurationAndSWHardeningNeeded):
            .outOfDateConfigurationNeeded
        default: self
        }
    }

    /// A TD 1.5's launch status (this) with the status of its current TDX
    /// module: an out-of-date launch whose current module is not out of date
    /// becomes ``tdRelaunchAdvised`` (``tdRelaunchAdvisedConfigurationNeeded``
    /// when either needs configuration).
    public func relaunchChecked(current: TCBStatus) -> TCBStatus {
        switch (self, current) {
        case (.outOfDate, .upToDate), (.outOfDate, .swHardeningNeeded), (.outOfDate, .configurationNeeded),
            (.outOfDate, .configurationAndSWHardeningNeeded), (.outOfDateConfigurationNeeded, .upToDate),
            (.outOfDateConfigurationNeeded, .swHardeningNeeded), (.outOfDateConfigurationNeeded, .configurationNeeded),
            (.outOfDateConfigurationNeeded, .configurationAndSWHardeningNeeded):
            needsConfiguration || current.needsConfiguration
                ? .tdRelaunchAdvisedConfigurationNeeded : .tdRelaunchAdvised
        default: self
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
    /// The TCB evaluation data number: which TCB recovery this TCB info reflects.
    public let tcbEvaluationDataNumber: Int
    /// The TDX module's expected signer and attributes (used when TEE_TCB_SVN[1] is 0).
    public let tdxModule: ModuleIdentity?
    /// TDX module identities by id (`TDX_01`, ...), each with its own TCB levels.
    public let tdxModuleIdentities: [ModuleIdentity]
    /// The platform TCB levels, highest first: sorted by SGX components,
    /// then PCESVN, then TDX components (as Intel's QVL orders them), not in
    /// document order.
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

        /// Whether this identity is the one for module major version
        /// `version` (`TDX_<2 hex digits>`, compared case-insensitively).
        func isFor(version: UInt8) -> Bool {
            let digits = String(version, radix: 16, uppercase: true)
            return id.uppercased() == "TDX_" + (version < 16 ? "0" : "") + digits
        }
    }

    /// A TDX module TCB level.
    public struct ModuleLevel: Sendable, Hashable {
        /// Minimum TEE_TCB_SVN[0].
        public let isvSVN: Int
        /// The status at this level.
        public let status: TCBStatus
        /// The level's TCB date, Unix seconds.
        public let tcbDate: Int64
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
        /// The level's TCB date, Unix seconds.
        public let tcbDate: Int64
        /// Intel security advisories that apply.
        public let advisoryIDs: [String]

        /// Intel's order: SGX components, then PCESVN, then TDX components,
        /// each compared lexicographically.
        static func isHigher(_ a: Level, than b: Level) -> Bool {
            if a.sgxComponents != b.sgxComponents {
                return b.sgxComponents.lexicographicallyPrecedes(a.sgxComponents)
            }
            if a.pceSVN != b.pceSVN { return a.pceSVN > b.pceSVN }
            return b.tdxComponents.lexicographicallyPrecedes(a.tdxComponents)
        }
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
                levels.append(try CollateralFields(l, fail: fail).moduleLevel())
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
                    status: try lf.status("tcbStatus"), tcbDate: try lf.date("tcbDate"),
                    advisoryIDs: try lf.strings("advisoryIDs")))
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
        self.tcbEvaluationDataNumber = try d.int("tcbEvaluationDataNumber")
        if let m = root["tdxModule"] { self.tdxModule = try module(m, id: "") } else { self.tdxModule = nil }
        self.tdxModuleIdentities = identities
        // Equal levels keep their document order.
        self.tcbLevels = levels.enumerated().sorted { a, b in
            if Level.isHigher(a.element, than: b.element) { return true }
            if Level.isHigher(b.element, than: a.element) { return false }
            return a.offset < b.offset
        }.map(\.element)
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

    /// An RFC 3339 date with `Z` (fractional seconds allowed), Unix seconds.
    func date(_ key: String) throws(AttestationError) -> Int64 {
        let text = try string(key)
        guard let seconds = parseISO8601(text) else { throw fail("\(key) \(text) is not an RFC 3339 date in UTC") }
        return seconds
    }

    /// A TDX module or QE identity level: `tcb.isvsvn`, `tcbDate`, `tcbStatus`, `advisoryIDs`.
    func moduleLevel() throws(AttestationError) -> TCBInfo.ModuleLevel {
        let svn = try CollateralFields(try field("tcb"), fail: fail).int("isvsvn")
        guard (0...Int(UInt16.max)).contains(svn) else { throw fail("isvsvn \(svn) is out of range") }
        return TCBInfo.ModuleLevel(
            isvSVN: svn, status: try status("tcbStatus"), tcbDate: try date("tcbDate"),
            advisoryIDs: try strings("advisoryIDs"))
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
    /// The TCB evaluation data number.
    public let tcbEvaluationDataNumber: Int
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
            levels.append(try CollateralFields(l, fail: fail).moduleLevel())
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
        self.tcbEvaluationDataNumber = try d.int("tcbEvaluationDataNumber")
        self.tcbLevels = levels
    }
}
