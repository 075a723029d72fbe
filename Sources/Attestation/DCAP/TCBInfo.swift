import Foundation
import SecretSharing

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
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: Data(json.utf8))
        } catch {
            throw AttestationError(.decodingFailed, step: .tcbInfo, "TCB info JSON does not decode: \(error)")
        }
        func bytes(_ hex: String, _ count: Int, _ field: String) throws(AttestationError) -> [UInt8] {
            guard let value = [UInt8](hex: hex), value.count == count else {
                throw AttestationError(.decodingFailed, step: .tcbInfo, "TCB info \(field) is not \(count) bytes of hex")
            }
            return value
        }
        guard let issue = parseISO8601(raw.issueDate), let next = parseISO8601(raw.nextUpdate) else {
            throw AttestationError(.decodingFailed, step: .tcbInfo, "TCB info dates are not ISO 8601")
        }
        func module(_ m: Raw.Module, id: String) throws(AttestationError) -> ModuleIdentity {
            var levels: [ModuleLevel] = []
            for l in m.tcbLevels ?? [] {
                levels.append(ModuleLevel(isvSVN: l.tcb.isvsvn, status: l.tcbStatus, advisoryIDs: l.advisoryIDs ?? []))
            }
            return ModuleIdentity(
                id: id, mrSigner: try bytes(m.mrsigner, 48, "mrsigner"), attributes: try bytes(m.attributes, 8, "attributes"),
                attributesMask: try bytes(m.attributesMask, 8, "attributesMask"), tcbLevels: levels)
        }
        var levels: [Level] = []
        for l in raw.tcbLevels {
            let sgx = l.tcb.sgxtcbcomponents.map(\.svn)
            let tdx = (l.tcb.tdxtcbcomponents ?? []).map(\.svn)
            guard sgx.count == 16, tdx.count == 16 || tdx.isEmpty else {
                throw AttestationError(.decodingFailed, step: .tcbInfo, "a TCB level does not have 16 components")
            }
            levels.append(
                Level(
                    sgxComponents: sgx, pceSVN: l.tcb.pcesvn, tdxComponents: tdx, status: l.tcbStatus,
                    advisoryIDs: l.advisoryIDs ?? []))
        }
        var identities: [ModuleIdentity] = []
        for m in raw.tdxModuleIdentities ?? [] { identities.append(try module(m, id: m.id ?? "")) }
        self.id = raw.id
        self.version = raw.version
        self.issueDate = issue
        self.nextUpdate = next
        self.fmspc = try bytes(raw.fmspc, 6, "fmspc")
        self.pceID = try bytes(raw.pceId, 2, "pceId")
        self.tdxModule = try raw.tdxModule.map { (m) throws(AttestationError) in try module(m, id: "") }
        self.tdxModuleIdentities = identities
        self.tcbLevels = levels
    }

    private struct Raw: Decodable {
        struct Component: Decodable { let svn: UInt8 }
        struct TCB: Decodable {
            let sgxtcbcomponents: [Component]
            let pcesvn: Int
            let tdxtcbcomponents: [Component]?
        }
        struct Level: Decodable {
            let tcb: TCB
            let tcbStatus: TCBStatus
            let advisoryIDs: [String]?
        }
        struct ModuleTCB: Decodable { let isvsvn: Int }
        struct ModuleLevel: Decodable {
            let tcb: ModuleTCB
            let tcbStatus: TCBStatus
            let advisoryIDs: [String]?
        }
        struct Module: Decodable {
            let id: String?
            let mrsigner: String
            let attributes: String
            let attributesMask: String
            let tcbLevels: [ModuleLevel]?
        }
        let id: String
        let version: Int
        let issueDate: String
        let nextUpdate: String
        let fmspc: String
        let pceId: String
        let tdxModule: Module?
        let tdxModuleIdentities: [Module]?
        let tcbLevels: [Level]
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
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: Data(json.utf8))
        } catch {
            throw AttestationError(.decodingFailed, step: .qeIdentity, "QE identity JSON does not decode: \(error)")
        }
        func bytes(_ hex: String, _ count: Int, _ field: String) throws(AttestationError) -> [UInt8] {
            guard let value = [UInt8](hex: hex), value.count == count else {
                throw AttestationError(
                    .decodingFailed, step: .qeIdentity, "QE identity \(field) is not \(count) bytes of hex")
            }
            return value
        }
        guard let issue = parseISO8601(raw.issueDate), let next = parseISO8601(raw.nextUpdate) else {
            throw AttestationError(.decodingFailed, step: .qeIdentity, "QE identity dates are not ISO 8601")
        }
        guard (0...Int(UInt16.max)).contains(raw.isvprodid) else {
            throw AttestationError(.decodingFailed, step: .qeIdentity, "QE identity isvprodid is out of range")
        }
        let misc = try bytes(raw.miscselect, 4, "miscselect")
        let miscMask = try bytes(raw.miscselectMask, 4, "miscselectMask")
        func le32(_ b: [UInt8]) -> UInt32 { UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24 }
        self.id = raw.id
        self.version = raw.version
        self.issueDate = issue
        self.nextUpdate = next
        self.miscSelect = le32(misc)
        self.miscSelectMask = le32(miscMask)
        self.attributes = try bytes(raw.attributes, 16, "attributes")
        self.attributesMask = try bytes(raw.attributesMask, 16, "attributesMask")
        self.mrSigner = try bytes(raw.mrsigner, 32, "mrsigner")
        self.isvProdID = UInt16(raw.isvprodid)
        self.tcbLevels = raw.tcbLevels.map {
            TCBInfo.ModuleLevel(isvSVN: $0.tcb.isvsvn, status: $0.tcbStatus, advisoryIDs: $0.advisoryIDs ?? [])
        }
    }

    private struct Raw: Decodable {
        struct TCB: Decodable { let isvsvn: Int }
        struct Level: Decodable {
            let tcb: TCB
            let tcbStatus: TCBStatus
            let advisoryIDs: [String]?
        }
        let id: String
        let version: Int
        let issueDate: String
        let nextUpdate: String
        let miscselect: String
        let miscselectMask: String
        let attributes: String
        let attributesMask: String
        let mrsigner: String
        let isvprodid: Int
        let tcbLevels: [Level]
    }
}
