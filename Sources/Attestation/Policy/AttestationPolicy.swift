import Foundation
import KeyrackCore

/// The measured values a rule looks at.
public struct MeasuredState: Sendable, Equatable {
    /// MRTD, 48 bytes.
    public var mrtd: [UInt8]
    /// RTMR0…RTMR3, 48 bytes each.
    public var rtmrs: [[UInt8]]
    /// The DCAP TCB status name (`UpToDate`, `SWHardeningNeeded`, …).
    public var tcbStatus: String

    /// Measurements from their parts.
    public init(mrtd: [UInt8], rtmrs: [[UInt8]], tcbStatus: String) {
        self.mrtd = mrtd
        self.rtmrs = rtmrs
        self.tcbStatus = tcbStatus
    }
}

/// One rule of the policy: a field and the values it may take.
public protocol PolicyRule: Sendable {
    /// The field's name as reported in `PolicyViolation` (`MRTD`, `RTMR1`, `tcbStatus`).
    var field: String { get }
    /// Whether `state` satisfies the rule.
    func allows(_ state: MeasuredState) -> Bool
}

/// A measurement register that must equal one of a list of values.
public struct MeasurementAllowlist: PolicyRule {
    public let field: String
    let allowed: Set<[UInt8]>
    let value: @Sendable (MeasuredState) -> [UInt8]?

    public func allows(_ state: MeasuredState) -> Bool {
        guard let measured = value(state) else { return false }
        return allowed.contains(measured)
    }
}

/// A TCB status that must be one of a list.
public struct TCBStatusAllowlist: PolicyRule {
    public let field = "tcbStatus"
    let allowed: Set<String>

    public func allows(_ state: MeasuredState) -> Bool { allowed.contains(state.tcbStatus) }
}

/// The measurement policy for TDX quotes, used by the KMS and by
/// trust-quorum nodes: every rule must allow the quote; the first that does
/// not is named (in the KMS's `403 PolicyViolation` answer), the allowlists
/// themselves never.
public struct AttestationPolicy: Sendable {
    /// The rules, in the order they are checked: MRTD, RTMR0–3, TCB status.
    public let rules: [any PolicyRule]

    /// The first rule `state` breaks, or `nil` if it satisfies them all.
    public func violation(for state: MeasuredState) -> String? {
        rules.first { !$0.allows(state) }?.field
    }

    /// Parses the policy file: JSON with the allowlists `mrtd`, `rtmr0` …
    /// `rtmr3` (hex, 48 bytes each) and `tcbStatus`. Every list must be
    /// present (an empty list allows nothing); unknown keys are refused so a
    /// misspelt field cannot silently allow everything.
    public init(json: Data) throws(PolicyError) {
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: json) as? [String: Any] else {
                throw PolicyError(.json, "the policy must be a JSON object")
            }
            object = parsed
        } catch let error as PolicyError {
            throw error
        } catch {
            throw PolicyError(.json, "the policy is not valid JSON")
        }
        let measurementFields = ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"]
        let known = Set(measurementFields + ["tcbStatus"])
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw PolicyError(
                .unknownField, "unknown policy field '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        var rules: [any PolicyRule] = []
        for (index, name) in measurementFields.enumerated() {
            guard let list = object[name] as? [String] else {
                throw PolicyError(.field, "'\(name)' must be a list of hex strings")
            }
            var allowed = Set<[UInt8]>()
            for entry in list {
                guard let bytes = [UInt8](hex: entry), bytes.count == 48 else {
                    throw PolicyError(.field, "'\(name)' entries must be 96 hex characters (48 bytes)")
                }
                allowed.insert(bytes)
            }
            let field = index == 0 ? "MRTD" : "RTMR\(index - 1)"
            let register = index - 1
            rules.append(
                MeasurementAllowlist(field: field, allowed: allowed) { state in
                    register < 0 ? state.mrtd : (state.rtmrs.indices.contains(register) ? state.rtmrs[register] : nil)
                }
            )
        }
        guard let statuses = object["tcbStatus"] as? [String] else {
            throw PolicyError(.field, "'tcbStatus' must be a list of TCB status names")
        }
        let validStatuses: Set<String> = [
            "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
            "OutOfDate", "OutOfDateConfigurationNeeded",
        ]
        if let bad = statuses.first(where: { !validStatuses.contains($0) }) {
            throw PolicyError(
                .field, "'tcbStatus' entry '\(bad)' is not an acceptable TCB status (Revoked can never be allowed)"
            )
        }
        rules.append(TCBStatusAllowlist(allowed: Set(statuses)))
        self.rules = rules
    }
}

/// A policy file that could not be used, and why.
public typealias PolicyError = CodedError<PolicyErrorCode>

/// The codes of ``PolicyError``.
public struct PolicyErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// No policy file is configured (`POLICY_FILE` is not set).
    public static let notConfigured = PolicyErrorCode("ATTEST-POLICY-NOT-CONFIGURED")
    /// The policy file cannot be read.
    public static let unreadable = PolicyErrorCode("ATTEST-POLICY-UNREADABLE")
    /// The policy is not JSON, or not a JSON object.
    public static let json = PolicyErrorCode("ATTEST-POLICY-JSON")
    /// The policy has a field this version does not know (a misspelt field
    /// would otherwise allow everything).
    public static let unknownField = PolicyErrorCode("ATTEST-POLICY-UNKNOWN-FIELD")
    /// A field is missing or has a value that is not allowed (not a list,
    /// not 48 bytes of hex, not an acceptable TCB status).
    public static let field = PolicyErrorCode("ATTEST-POLICY-FIELD")
}
