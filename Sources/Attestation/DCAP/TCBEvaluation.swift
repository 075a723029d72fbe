/// The TCB status of a platform and its parts, with the advisories that apply.
public struct TCBVerdict: Sendable, Hashable {
    /// The combined status (platform, TDX module and QE; for TD 1.5, the
    /// relaunch check against the current module).
    public let status: TCBStatus
    /// Intel security advisories of the matching levels, without repeats.
    public let advisoryIDs: [String]
    /// The platform level's status (SGX components, PCESVN, TDX components).
    public let platformStatus: TCBStatus
    /// The TDX module identity level's status, when the module version is above 0.
    public let moduleStatus: TCBStatus?
    /// The QE identity level's status.
    public let qeStatus: TCBStatus
    /// TD 1.5 only: the status of the TD's current TDX module (TEE_TCB_SVN2),
    /// converged with the QE's.
    public let currentStatus: TCBStatus?
}

private func tcbFailure(_ code: AttestationError.Code, _ reason: String) -> RuleResult {
    .failsToMeetPolicy(AttestationError(code, step: .tcbStatus, reason))
}

private func hexUpper(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
}

/// The TCB info must be a TDX one (id `TDX`, version 3 or later).
struct TCBInfoKindRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        let info = e.collateral.tcbInfo
        guard info.id == "TDX", info.version >= 3 else {
            return tcbFailure(.mismatch, "the TCB info is \(info.id) version \(info.version), not TDX version 3")
        }
        return .meetsPolicy
    }
}

/// A PCK certificate field must equal the TCB info's: the FMSPC, and the
/// PCE-ID (stricter than dcap-qvl; Intel's QVL checks it).
struct PlatformIdentityRule: DCAPRule {
    let name: String
    let field: @Sendable (PCKExtensions, TCBInfo) -> ([UInt8], [UInt8])

    static let fmspc = Self(name: "FMSPC") { ($0.fmspc, $1.fmspc) }
    static let pceID = Self(name: "PCE-ID") { ($0.pceID, $1.pceID) }

    func evaluate(_ e: Evidence) -> RuleResult {
        let (ours, theirs) = field(e.pckExtensions, e.collateral.tcbInfo)
        guard ours == theirs else {
            return tcbFailure(
                .mismatch, "the PCK certificate's \(name) \(hexUpper(ours)) is not the TCB info's \(hexUpper(theirs))")
        }
        return .meetsPolicy
    }
}

/// The TCB info must have a `tdxModule`.
struct TDXModuleRequiredRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        e.collateral.tcbInfo.tdxModule == nil
            ? tcbFailure(.decodingFailed, "the TDX TCB info has no tdxModule") : .meetsPolicy
    }
}

/// A matched level whose status its structure may carry, or why not.
private func matched<Level>(
    _ level: Level?, status: TCBStatus?, allowed: Set<TCBStatus>, step: AttestationError.Step, structure: String,
    none: String
) -> Result<Level, AttestationError> {
    guard let level, let status else { return .failure(AttestationError(.noMatchingTCBLevel, step: step, none)) }
    guard allowed.contains(status) else {
        return .failure(
            AttestationError(
                .unrecognizedTCBStatus, step: step, "TCB status \(status.rawValue) is not one \(structure) may carry"))
    }
    return .success(level)
}

/// The TDX module identity for a TEE_TCB_SVN: for module version
/// (TEE_TCB_SVN[1]) 0, none (the `tdxModule` applies); above 0, the
/// `tdxModuleIdentities` entry `TDX_<2 hex digits>` (case-insensitive),
/// which must exist.
struct ModuleIdentitySelection {
    let info: TCBInfo

    func identity(for svn: ArraySlice<UInt8>) -> Result<TCBInfo.ModuleIdentity?, AttestationError> {
        let version = svn[svn.startIndex + 1]
        if version == 0 { return .success(nil) }
        if let identity = info.tdxModuleIdentities.first(where: { $0.isFor(version: version) }) {
            return .success(identity)
        }
        let digits = String(version, radix: 16, uppercase: true)
        return .failure(
            AttestationError(
                .noMatchingTCBLevel, step: .tcbStatus,
                "the TCB info has no TDX module identity TDX_\(version < 16 ? "0" : "")\(digits)"))
    }
}

/// The TD's TDX module (MRSIGNERSEAM, SEAMATTRIBUTES) must be the one its
/// identity names: the module identity for a version above 0, else the
/// `tdxModule`. SEAMATTRIBUTES must equal the expected value under the
/// `attributesMask`, and no bit outside the mask may be set.
struct TDXModuleSignerRule: DCAPRule {
    func evaluate(_ e: Evidence) -> RuleResult {
        guard let base = e.collateral.tcbInfo.tdxModule else {
            return tcbFailure(.decodingFailed, "the TDX TCB info has no tdxModule")
        }
        let report = e.quote.report
        let expected: TCBInfo.ModuleIdentity
        switch ModuleIdentitySelection(info: e.collateral.tcbInfo).identity(for: report.teeTCBSVN) {
        case .failure(let error): return .failsToMeetPolicy(error)
        case .success(let identity): expected = identity ?? base
        }
        let name = expected.id.isEmpty ? "tdxModule" : "TDX module identity \(expected.id)"
        guard Array(report.mrSignerSeam) == expected.mrSigner else {
            return tcbFailure(.mismatch, "MRSIGNERSEAM does not match the \(name)")
        }
        for (i, byte) in report.seamAttributes.enumerated() {
            let mask = expected.attributesMask[i]
            if byte & mask != expected.attributes[i] & mask {
                return tcbFailure(.mismatch, "SEAMATTRIBUTES byte \(i) does not match the \(name) under its mask")
            }
            if byte & ~mask != 0 {
                return tcbFailure(.mismatch, "SEAMATTRIBUTES byte \(i) has bits outside the \(name)'s attributesMask")
            }
        }
        return .meetsPolicy
    }
}

/// The platform TCB level for a TEE_TCB_SVN: the highest level (levels are
/// sorted) whose PCESVN, SGX components and TDX components the platform
/// meets. TEE_TCB_SVN[0..1] are compared only when the module version
/// (TEE_TCB_SVN[1]) is 0; above 0 the module identity grades them. The
/// level's status must be one a TCB info level may carry.
struct PlatformLevelMatch {
    let info: TCBInfo
    let pck: PCKExtensions

    func level(for svn: ArraySlice<UInt8>) -> Result<TCBInfo.Level, AttestationError> {
        let teeTCBSVN = Array(svn)
        let skip = teeTCBSVN[1] > 0 ? 2 : 0
        let match = info.tcbLevels.first { level in
            Int(pck.pceSVN) >= level.pceSVN
                && zip(pck.tcbComponents, level.sgxComponents).allSatisfy { $0 >= $1 }
                && level.tdxComponents.count == 16
                && (skip..<16).allSatisfy { teeTCBSVN[$0] >= level.tdxComponents[$0] }
        }
        return matched(
            match, status: match?.status, allowed: TCBStatus.platformLevelStatuses, step: .tcbStatus,
            structure: "a TCB info level",
            none: "no matching TCB level found for the platform and TEE_TCB_SVN \(hexUpper(teeTCBSVN))")
    }
}

/// The TDX module level for a TEE_TCB_SVN with a module version above 0:
/// the first level of the module identity whose ISVSVN TEE_TCB_SVN[0]
/// meets; its status must be UpToDate, OutOfDate or Revoked.
struct ModuleLevelMatch {
    let info: TCBInfo

    func level(for svn: ArraySlice<UInt8>) -> Result<TCBInfo.ModuleLevel?, AttestationError> {
        let identity: TCBInfo.ModuleIdentity
        switch ModuleIdentitySelection(info: info).identity(for: svn) {
        case .failure(let error): return .failure(error)
        case .success(nil): return .success(nil)
        case .success(let found?): identity = found
        }
        let isvSVN = Int(svn[svn.startIndex])
        let level = identity.tcbLevels.first(where: { isvSVN >= $0.isvSVN })
        return matched(
            level, status: level?.status, allowed: TCBStatus.moduleLevelStatuses, step: .tcbStatus,
            structure: "a TDX module identity level",
            none: "no TCB level of TDX module identity \(identity.id) covers ISVSVN \(isvSVN)"
        ).map { $0 }
    }
}

/// The QE identity level the QE's ISVSVN meets; its status must be one a QE
/// identity level may carry (not `SWHardeningNeeded`).
struct QELevelMatch {
    let identity: QEIdentity

    func level(for isvSVN: UInt16) -> Result<TCBInfo.ModuleLevel, AttestationError> {
        let level = identity.tcbLevels.first(where: { Int(isvSVN) >= $0.isvSVN })
        return matched(
            level, status: level?.status, allowed: TCBStatus.qeLevelStatuses, step: .qeIdentityMatch,
            structure: "a QE identity level", none: "no QE identity TCB level covers ISVSVN \(isvSVN)")
    }
}

/// The TCB status: the platform level for TEE_TCB_SVN converged with its
/// TDX module level and with the QE's level; for TD 1.5, the current module
/// (TEE_TCB_SVN2) graded the same way, a `Revoked` one refused and an
/// out-of-date launch with a current module not out of date reported as a
/// relaunch status. Advisory ids are the union of the launch platform,
/// module and QE levels'.
struct TCBStatusRule {
    func evaluate(_ e: Evidence) throws(AttestationError) -> TCBVerdict {
        let info = e.collateral.tcbInfo
        let platform = PlatformLevelMatch(info: info, pck: e.pckExtensions)
        let module = ModuleLevelMatch(info: info)
        let report = e.quote.report

        let level = try platform.level(for: report.teeTCBSVN).get()
        let moduleLevel = try module.level(for: report.teeTCBSVN).get()
        let qeLevel = try QELevelMatch(identity: e.collateral.qeIdentity).level(
            for: e.quote.signatureData.qeReport.isvSVN
        ).get()

        var launch = level.status
        var advisories = level.advisoryIDs
        if let moduleLevel {
            launch = launch.converged(withComponent: moduleLevel.status)
            advisories += moduleLevel.advisoryIDs
        }
        var status = launch.converged(withComponent: qeLevel.status)
        advisories += qeLevel.advisoryIDs

        var current: TCBStatus? = nil
        if let svn2 = report.teeTCBSVN2 {
            var now = try platform.level(for: svn2).get().status
            if let currentModule = try module.level(for: svn2).get() {
                now = now.converged(withComponent: currentModule.status)
            }
            current = now.converged(withComponent: qeLevel.status)
        }
        guard status != .revoked, current != .revoked else {
            let which = status == .revoked ? "the platform's TCB level" : "the TD's current TDX module (TEE_TCB_SVN2)"
            throw AttestationError(.tcbRevoked, step: .tcbStatus, "\(which) is Revoked")
        }
        if let current { status = status.relaunchChecked(current: current) }

        var seen = Set<String>()
        return TCBVerdict(
            status: status, advisoryIDs: advisories.filter { seen.insert($0).inserted },
            platformStatus: level.status, moduleStatus: moduleLevel?.status, qeStatus: qeLevel.status,
            currentStatus: current)
    }
}
