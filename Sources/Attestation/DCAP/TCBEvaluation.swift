/// The TCB status of a platform and its parts, with the advisories that apply.
public struct TCBVerdict: Sendable, Hashable {
    /// The combined status (platform, TDX module and QE).
    public let status: TCBStatus
    /// Intel security advisories of the matching levels, without repeats.
    public let advisoryIDs: [String]
    /// The platform level's status (SGX components, PCESVN, TDX components).
    public let platformStatus: TCBStatus
    /// The TDX module identity level's status, when the TCB info has one for the module.
    public let moduleStatus: TCBStatus?
    /// The QE identity level's status.
    public let qeStatus: TCBStatus
}

/// Matches the PCK certificate's SGX extensions and the quote's TEE_TCB_SVN
/// against the TCB info, the TDX module against its identity, and the QE
/// against the QE identity's levels.
struct TCBStatusRule {
    func evaluate(_ e: Evidence) throws(AttestationError) -> TCBVerdict {
        let info = e.collateral.tcbInfo
        let ext = e.pckExtensions
        let report = e.quote.report
        func fail(_ code: AttestationError.Code, _ reason: String) -> AttestationError {
            AttestationError(code, step: .tcbStatus, reason)
        }
        guard info.id == "TDX", info.version >= 3 else {
            throw fail(.mismatch, "the TCB info is \(info.id) version \(info.version), not TDX version 3")
        }
        guard ext.fmspc == info.fmspc else {
            throw fail(
                .mismatch,
                "the PCK certificate's FMSPC \(hex(ext.fmspc)) is not the TCB info's \(hex(info.fmspc))")
        }
        guard ext.pceID == info.pceID else {
            throw fail(
                .mismatch, "the PCK certificate's PCE-ID \(hex(ext.pceID)) is not the TCB info's \(hex(info.pceID))")
        }
        let teeTCBSVN = Array(report.teeTCBSVN)
        guard
            let level = info.tcbLevels.first(where: { level in
                Int(ext.pceSVN) >= level.pceSVN
                    && zip(ext.tcbComponents, level.sgxComponents).allSatisfy { $0 >= $1 }
                    && !level.tdxComponents.isEmpty
                    && zip(teeTCBSVN, level.tdxComponents).allSatisfy { $0 >= $1 }
            })
        else {
            throw fail(.noMatchingTCBLevel, "no matching TCB level found for the platform and TEE_TCB_SVN")
        }

        var status = level.status
        var advisories = level.advisoryIDs
        var moduleStatus: TCBStatus? = nil
        let moduleVersion = teeTCBSVN[1]
        let moduleID = "TDX_" + (moduleVersion < 16 ? "0" : "") + String(moduleVersion, radix: 16).uppercased()
        if let identity = info.tdxModuleIdentities.first(where: { $0.id == moduleID }) {
            try checkModule(identity, report: report, fail: fail)
            guard let moduleLevel = identity.tcbLevels.first(where: { Int(teeTCBSVN[0]) >= $0.isvSVN }) else {
                throw fail(
                    .noMatchingTCBLevel, "no TCB level of TDX module identity \(moduleID) covers ISVSVN \(teeTCBSVN[0])"
                )
            }
            moduleStatus = moduleLevel.status
            status = status.merged(with: moduleLevel.status)
            advisories += moduleLevel.advisoryIDs
        } else if !info.tdxModuleIdentities.isEmpty, moduleVersion != 0 {
            throw fail(.noMatchingTCBLevel, "the TCB info has no TDX module identity \(moduleID)")
        } else if let module = info.tdxModule {
            try checkModule(module, report: report, fail: fail)
        }

        let qe = e.quote.signatureData.qeReport
        guard let qeLevel = e.collateral.qeIdentity.tcbLevels.first(where: { Int(qe.isvSVN) >= $0.isvSVN }) else {
            throw AttestationError(
                .noMatchingTCBLevel, step: .qeIdentityMatch, "no QE identity TCB level covers the QE")
        }
        status = status.merged(with: qeLevel.status)
        advisories += qeLevel.advisoryIDs

        var seen = Set<String>()
        return TCBVerdict(
            status: status, advisoryIDs: advisories.filter { seen.insert($0).inserted },
            platformStatus: level.status, moduleStatus: moduleStatus, qeStatus: qeLevel.status)
    }

    private func checkModule(
        _ identity: TCBInfo.ModuleIdentity, report: TDReport, fail: (AttestationError.Code, String) -> AttestationError
    ) throws(AttestationError) {
        guard Array(report.mrSignerSeam) == identity.mrSigner else {
            throw fail(.mismatch, "MRSIGNERSEAM does not match the TDX module identity")
        }
        for (i, byte) in report.seamAttributes.enumerated()
        where byte & identity.attributesMask[i] != identity.attributes[i] & identity.attributesMask[i] {
            throw fail(.mismatch, "SEAMATTRIBUTES do not match the TDX module identity")
        }
    }

    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
    }
}
