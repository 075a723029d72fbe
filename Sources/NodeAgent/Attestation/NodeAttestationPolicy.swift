import Attestation
import Foundation
import KeyrackCore
import SecretSharing

/// What a node requires of its peers' attestation evidence, from one JSON
/// file (the format is in the NodeAgent article):
///
/// ```json
/// {
///   "mode": "enforce",
///   "softwareRootOfTrust": { "allow": { "executable": ["<sha-256 hex>", …] } },
///   "tdx": {
///     "trustAnchor": "tee/root.der",
///     "collateralDirectory": "tee",          (or "pccs": "https://pccs.example:8081")
///     "allow": { "mrtd": […], "rtmr0": […], "rtmr1": […], "rtmr2": […], "rtmr3": […], "tcbStatus": ["UpToDate"] }
///   }
/// }
/// ```
///
/// A section that is absent means that kind of evidence is refused. Unknown
/// keys are refused at every level, so a misspelt field cannot silently
/// allow everything.
public struct NodeAttestationPolicy: Sendable {
    /// Enforcing (the default) or permissive.
    public let mode: AttestationMode
    /// The allowlists for software root-of-trust evidence, if it is accepted.
    public let softwareRootOfTrust: SoftwareMeasurementPolicy?
    /// The trust anchor, collateral and allowlists for TDX quotes, if they are accepted.
    public let tdx: TDXAttestationPolicy?

    /// A policy from its parts.
    public init(
        mode: AttestationMode = .enforce,
        softwareRootOfTrust: SoftwareMeasurementPolicy? = nil,
        tdx: TDXAttestationPolicy? = nil
    ) {
        self.mode = mode
        self.softwareRootOfTrust = softwareRootOfTrust
        self.tdx = tdx
    }

    /// A loud warning to log at start-up when attestation is not enforced;
    /// `nil` in enforcing mode.
    public var startupWarning: String? {
        guard mode == .permissive else { return nil }
        return "WARNING: PEER ATTESTATION IS NOT ENFORCED (policy mode 'permissive'): peers whose evidence breaks "
            + "the measurement policy are let through and will be sent shares. For development only; set "
            + "\"mode\": \"enforce\" in the node attestation policy for any real rack."
    }

    /// Reads the policy file at `url`; relative paths in it are resolved
    /// against the file's directory.
    /// - Throws: ``NodeAttestationPolicyError`` naming the file and what is wrong.
    public static func load(contentsOf url: URL) throws(NodeAttestationPolicyError) -> NodeAttestationPolicy {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw NodeAttestationPolicyError(.notFound, "no node attestation policy at \(url.path)")
        }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw NodeAttestationPolicyError(.unreadable, "cannot read the node attestation policy \(url.path)")
        }
        do {
            return try NodeAttestationPolicy(json: data, relativeTo: url.deletingLastPathComponent())
        } catch {
            throw NodeAttestationPolicyError(error.code, "\(url.path): \(error.reason)")
        }
    }

    /// Parses a policy; relative paths are resolved against `base` (the
    /// current directory if `nil`).
    public init(json: Data, relativeTo base: URL? = nil) throws(NodeAttestationPolicyError) {
        let object = try JSONFields<NodeAttestationPolicyErrorCode>(json, what: "the policy")
        try object.refuseUnknownKeys(["mode", "softwareRootOfTrust", "tdx"])
        switch try object.optionalString("mode") {
        case nil, "enforce": mode = .enforce
        case "permissive": mode = .permissive
        case let other?:
            throw NodeAttestationPolicyError(.invalid, "'mode' must be \"enforce\" or \"permissive\", not \"\(other)\"")
        }
        softwareRootOfTrust = try object.optionalObject("softwareRootOfTrust").map(SoftwareMeasurementPolicy.init)
        tdx = try object.optionalObject("tdx").map { section throws(NodeAttestationPolicyError) in
            try TDXAttestationPolicy(section, relativeTo: base)
        }
        guard softwareRootOfTrust != nil || tdx != nil else {
            throw NodeAttestationPolicyError(
                .invalid, "the policy accepts no evidence: give a 'softwareRootOfTrust' or a 'tdx' section")
        }
    }

    /// A policy file (JSON) that allows exactly the measurements of `log`
    /// and, if given, the quotes of `softwareTEE` with its default
    /// measurements and an up-to-date TCB. The operator tooling writes it
    /// for the running binary.
    public static func json(
        allowing log: MeasurementLog?,
        softwareTEE: SoftwareTEE? = nil,
        mode: AttestationMode = .enforce
    ) -> String {
        var object: [String: Any] = ["mode": mode.rawValue]
        if let log {
            let allow = Dictionary(uniqueKeysWithValues: log.entries.map { ($0.name, [$0.digest.hexString]) })
            object["softwareRootOfTrust"] = ["allow": allow]
        }
        if let tee = softwareTEE {
            let measurements = tee.defaultMeasurements
            var allow: [String: [String]] = ["mrtd": [measurements.mrTD.hexString], "tcbStatus": ["UpToDate"]]
            for (index, rtmr) in measurements.rtmrs.enumerated() { allow["rtmr\(index)"] = [rtmr.hexString] }
            object["tdx"] = [
                "trustAnchor": tee.directory.appendingPathComponent("root.der").path,
                "collateralDirectory": tee.directory.path,
                "allow": allow,
            ]
        }
        let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data ?? Data(), as: UTF8.self) + "\n"
    }
}

/// The software root-of-trust allowlists: for each measurement name, the
/// digests allowed. Every entry of a peer's log must be named here with an
/// allowed digest, and every name here must be in the log.
public struct SoftwareMeasurementPolicy: Sendable, Hashable {
    /// Allowed SHA-256 digests by measurement name.
    public let allowed: [String: Set<[UInt8]>]

    /// Allowlists from their parts.
    public init(allowed: [String: Set<[UInt8]>]) { self.allowed = allowed }

    /// Allowlists that allow exactly the measurements of `log`.
    public init(allowing log: MeasurementLog) {
        allowed = Dictionary(uniqueKeysWithValues: log.entries.map { ($0.name, [$0.digest]) })
    }

    init(_ section: JSONFields<NodeAttestationPolicyErrorCode>) throws(NodeAttestationPolicyError) {
        try section.refuseUnknownKeys(["allow"])
        guard let allow = try section.optionalObject("allow") else {
            throw NodeAttestationPolicyError(.missing, "'softwareRootOfTrust.allow' is missing")
        }
        var allowed: [String: Set<[UInt8]>] = [:]
        for (name, value) in allow.object {
            guard let list = value as? [String] else {
                throw NodeAttestationPolicyError(
                    .invalid, "'softwareRootOfTrust.allow.\(name)' must be a list of hex strings")
            }
            var digests = Set<[UInt8]>()
            for entry in list {
                guard let digest = [UInt8](hex: entry), digest.count == 32 else {
                    throw NodeAttestationPolicyError(
                        .invalid, "'softwareRootOfTrust.allow.\(name)' entries must be 64 hex characters (SHA-256)")
                }
                digests.insert(digest)
            }
            allowed[name] = digests
        }
        self.allowed = allowed
    }

    /// The rules `log` breaks.
    func violations(_ log: MeasurementLog) -> [AttestationViolation] {
        var violations: [AttestationViolation] = []
        for entry in log.entries {
            guard let digests = allowed[entry.name] else {
                violations.append(.init(rule: "measurement '\(entry.name)'", detail: "not named by the policy"))
                continue
            }
            if !digests.contains(entry.digest) {
                violations.append(
                    .init(
                        rule: "measurement '\(entry.name)'",
                        detail: "digest \(entry.digest.hexString) is not allowed"))
            }
        }
        for name in allowed.keys.sorted() where log[name] == nil {
            violations.append(.init(rule: "measurement '\(name)'", detail: "missing from the measurement log"))
        }
        return violations
    }
}

/// How TDX quotes are appraised: full DCAP verification under
/// ``trustAnchor`` with the collateral of ``collateralSource``, then the
/// MRTD/RTMR0–3/TCB status allowlists of ``measurements`` (the KMS's policy
/// format).
public struct TDXAttestationPolicy: Sendable {
    /// Where the collateral for peers' quotes comes from.
    public enum CollateralSource: Sendable {
        /// Documents in a directory (`tdx.collateralDirectory`), read when the policy is loaded.
        case directory(CollateralDirectory)
        /// A PCCS or Intel's PCS (`tdx.pccs`): fetched by FMSPC and PCK CA on
        /// first use, cached, refreshed before `nextUpdate`, and served from
        /// the cache while the PCCS is down and the document is still valid.
        case pccs(PCCSCollateralCache)
    }

    /// The root every quote's chains must lead to.
    public let trustAnchor: TrustAnchor
    /// Where collateral comes from.
    public let collateralSource: CollateralSource
    /// The measurement allowlists.
    public let measurements: AttestationPolicy
    let verifier: QuoteVerifier

    /// A TDX policy from its parts.
    public init(trustAnchor: TrustAnchor, collateral: CollateralSource, measurements: AttestationPolicy) {
        self.trustAnchor = trustAnchor
        self.collateralSource = collateral
        self.measurements = measurements
        verifier = QuoteVerifier(trustAnchor: trustAnchor)
    }

    /// A TDX policy with the collateral of a directory.
    public init(trustAnchor: TrustAnchor, collateral: CollateralDirectory, measurements: AttestationPolicy) {
        self.init(trustAnchor: trustAnchor, collateral: .directory(collateral), measurements: measurements)
    }

    /// The collateral directory, when the collateral comes from one.
    public var collateralDirectory: CollateralDirectory? {
        if case .directory(let directory) = collateralSource { return directory }
        return nil
    }

    /// The collateral for `quote` at `now`: looked up in the directory, or
    /// from the PCCS cache (which fetches on first use and before expiry).
    func collateral(for quote: Quote, now: Date) async throws(AttestationError) -> Collateral {
        switch collateralSource {
        case .directory(let directory): return try directory.collateral(for: quote)
        case .pccs(let cache): return try await cache.collateral(for: quote, now: Int64(now.timeIntervalSince1970))
        }
    }

    init(_ section: JSONFields<NodeAttestationPolicyErrorCode>, relativeTo base: URL?)
        throws(NodeAttestationPolicyError)
    {
        try section.refuseUnknownKeys(["trustAnchor", "collateralDirectory", "pccs", "allow"])
        func path(_ key: String) throws(NodeAttestationPolicyError) -> URL {
            guard let value = try section.optionalString(key) else {
                throw NodeAttestationPolicyError(.missing, "'tdx.\(key)' is missing")
            }
            return value.hasPrefix("/") || base == nil
                ? URL(fileURLWithPath: value) : base!.appendingPathComponent(value)
        }
        let anchor: TrustAnchor
        if try section.optionalString("trustAnchor") == "intel" {
            anchor = .intelSGXRootCA
        } else {
            let file = try path("trustAnchor")
            guard let bytes = FileManager.default.contents(atPath: file.path) else {
                throw NodeAttestationPolicyError(.trustAnchor, "cannot read the TDX trust anchor \(file.path)")
            }
            do {
                anchor = try TrustAnchor(bytes: Array(bytes))
            } catch {
                throw NodeAttestationPolicyError(.trustAnchor, "the TDX trust anchor \(file.path): \(error.reason)")
            }
        }
        let source: CollateralSource
        switch (try section.optionalString("collateralDirectory"), try section.optionalString("pccs")) {
        case (.some, .some), (nil, nil):
            throw NodeAttestationPolicyError(.invalid, "'tdx' needs exactly one of 'collateralDirectory' and 'pccs'")
        case (nil, let url?):
            guard let parsed = URL(string: url), ["https", "http"].contains(parsed.scheme ?? ""), parsed.host != nil
            else {
                throw NodeAttestationPolicyError(
                    .invalid, "'tdx.pccs' must be an https:// (or http://) URL, not \"\(url)\"")
            }
            source = .pccs(PCCSCollateralCache(url: url, verifier: QuoteVerifier(trustAnchor: anchor)))
        case (.some, nil):
            let directory = try path("collateralDirectory")
            let collateral: CollateralDirectory
            do {
                collateral = try CollateralDirectory(directory: directory)
            } catch {
                throw NodeAttestationPolicyError(.collateral, error.reason)
            }
            guard !collateral.byFMSPC.isEmpty else {
                throw NodeAttestationPolicyError(.collateral, "no collateral document in \(directory.path)")
            }
            source = .directory(collateral)
        }
        guard let allow = try section.optionalObject("allow") else {
            throw NodeAttestationPolicyError(.missing, "'tdx.allow' is missing")
        }
        let measurements: AttestationPolicy
        do {
            measurements = try AttestationPolicy(json: try JSONSerialization.data(withJSONObject: allow.object))
        } catch let error as PolicyError {
            throw NodeAttestationPolicyError(.invalid, "'tdx.allow': \(error.reason)")
        } catch {
            throw NodeAttestationPolicyError(.invalid, "'tdx.allow' cannot be read")
        }
        self.init(trustAnchor: anchor, collateral: source, measurements: measurements)
    }
}

/// A node attestation policy that could not be loaded, and why: the
/// reason names the file and the field.
public typealias NodeAttestationPolicyError = CodedError<NodeAttestationPolicyErrorCode>

/// The codes of ``NodeAttestationPolicyError``.
public struct NodeAttestationPolicyErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// There is no policy file.
    public static let notFound = NodeAttestationPolicyErrorCode("NODE-POLICY-NOT-FOUND")
    /// The policy file exists but cannot be read.
    public static let unreadable = NodeAttestationPolicyErrorCode("NODE-POLICY-UNREADABLE")
    /// The policy is not valid JSON, or not a JSON object.
    public static let syntax = NodeAttestationPolicyErrorCode("NODE-POLICY-SYNTAX")
    /// A field that must be there is missing.
    public static let missing = NodeAttestationPolicyErrorCode("NODE-POLICY-MISSING")
    /// A field has a value that is not allowed, or the fields do not make a
    /// policy (no section, both or neither of `collateralDirectory` and `pccs`).
    public static let invalid = NodeAttestationPolicyErrorCode("NODE-POLICY-INVALID")
    /// A field is not one the policy has.
    public static let unknownField = NodeAttestationPolicyErrorCode("NODE-POLICY-UNKNOWN-FIELD")
    /// The TDX trust anchor cannot be read or is not a certificate.
    public static let trustAnchor = NodeAttestationPolicyErrorCode("NODE-POLICY-TRUST-ANCHOR")
    /// The TDX collateral directory cannot be read or holds no collateral document.
    public static let collateral = NodeAttestationPolicyErrorCode("NODE-POLICY-COLLATERAL")
    /// Operator-signed policy copies exist in the ledger directories but
    /// none can be used (unreadable, another rack's, a signature that does not verify).
    public static let signed = NodeAttestationPolicyErrorCode("NODE-POLICY-SIGNED")
}
