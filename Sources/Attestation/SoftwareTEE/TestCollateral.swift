import Foundation
import KeyrackCore

/// The TCB info and QE identity documents of a software TEE, built from a
/// short description a tester writes (the `--tcb-levels FILE` of
/// `keyrack tee init`):
///
/// ```json
/// {
///   "tcbLevels": [{"tdx": [5, 0, 4], "status": "UpToDate"},
///                 {"tdx": [5, 0, 3], "status": "OutOfDate", "advisories": ["INTEL-SA-01079"]}],
///   "tdxModuleIdentities": [{"id": "TDX_01", "levels": [{"isvsvn": 5, "status": "UpToDate"},
///                                                      {"isvsvn": 2, "status": "OutOfDate"}]}],
///   "qeLevels": [{"isvsvn": 4, "status": "UpToDate"}],
///   "tdxModule": null,
///   "tcbInfo": {"tcbEvaluationDataNumber": null},
///   "qeIdentity": {}
/// }
/// ```
///
/// Every key is optional. A platform level's `sgx` and `tdx` are SVN lists
/// (shorter lists are padded with zeros; `sgx` defaults to the platform's
/// CPUSVN, `tdx` to its TDX components), `pcesvn` defaults to the
/// platform's, `tcbDate` to 2024-03-13, `advisories` to none; a level given
/// in Intel's own form (with a `tcb` object) is kept as it is. A module
/// identity takes the zero MRSIGNERSEAM, zero attributes and a full mask
/// unless it names `mrsigner`, `attributes` or `attributesMask`.
/// `"tdxModule": null` leaves the TCB info without one. `tcbInfo` and
/// `qeIdentity` replace top-level fields of the signed documents (`null`
/// removes one), for anything else a test needs: a garbage `tcbDate`, a
/// missing `tcbEvaluationDataNumber`, another `pceId`.
struct TestCollateralDescription {
    let root: [String: Any]

    init(json: String?) throws {
        guard let json else {
            root = [:]
            return
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
        } catch {
            throw SoftwareTEEError(.tcbLevels, "the TCB levels description is not JSON: \(error.localizedDescription)")
        }
        guard let root = object as? [String: Any] else {
            throw SoftwareTEEError(.tcbLevels, "the TCB levels description must be a JSON object")
        }
        let known: Set = ["tcbLevels", "tdxModuleIdentities", "qeLevels", "tdxModule", "tcbInfo", "qeIdentity"]
        if let unknown = root.keys.first(where: { !known.contains($0) }) {
            throw SoftwareTEEError(
                .tcbLevels,
                "unknown key \(unknown) in the TCB levels description (known: \(known.sorted().joined(separator: ", ")))"
            )
        }
        self.root = root
    }

    static let defaultDate = "2024-03-13T00:00:00Z"
    static let zeroSigner = String(repeating: "0", count: 96)

    private static func components(_ value: Any?, default fallback: [UInt8], _ name: String) throws -> [[String: Any]] {
        var svns = fallback.map(Int.init)
        if let value {
            guard let list = value as? [Int], list.count <= 16, list.allSatisfy({ (0...255).contains($0) }) else {
                throw SoftwareTEEError(.tcbLevels, "\(name) must be a list of at most 16 SVNs (0–255)")
            }
            svns = list + [Int](repeating: 0, count: 16 - list.count)
        }
        return svns.map { ["svn": $0] }
    }

    private static func status(_ value: Any?, _ name: String) throws -> String {
        guard let text = value as? String, TCBStatus(rawValue: text) != nil else {
            throw SoftwareTEEError(
                .tcbLevels,
                "\(name).status must be one of \(TCBStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return text
    }

    private static func dated(_ level: inout [String: Any], _ item: [String: Any]) throws {
        level["tcbDate"] = item["tcbDate"] ?? defaultDate
        if let advisories = item["advisories"] {
            guard let ids = advisories as? [String] else {
                throw SoftwareTEEError(.tcbLevels, "advisories must be strings")
            }
            if !ids.isEmpty { level["advisoryIDs"] = ids }
        }
    }

    /// A platform level from the description's shorthand (or Intel's form).
    static func platformLevel(_ item: Any) throws -> [String: Any] {
        guard let item = item as? [String: Any] else {
            throw SoftwareTEEError(.tcbLevels, "a TCB level must be an object")
        }
        if item["tcb"] != nil { return item }
        var level: [String: Any] = [
            "tcb": [
                "sgxtcbcomponents": try components(item["sgx"], default: TestPlatform.sgxComponents, "sgx"),
                "pcesvn": item["pcesvn"] ?? Int(TestPlatform.pceSVN),
                "tdxtcbcomponents": try components(item["tdx"], default: TestPlatform.tdxComponents, "tdx"),
            ],
            "tcbStatus": try status(item["status"], "a TCB level"),
        ]
        try dated(&level, item)
        return level
    }

    /// A module or QE level: `isvsvn`, `status`, `advisories`, `tcbDate`.
    static func isvLevel(_ item: Any) throws -> [String: Any] {
        guard let item = item as? [String: Any] else { throw SoftwareTEEError(.tcbLevels, "a level must be an object") }
        if item["tcb"] != nil { return item }
        guard let svn = item["isvsvn"] as? Int else {
            throw SoftwareTEEError(.tcbLevels, "a module or QE level needs isvsvn")
        }
        var level: [String: Any] = ["tcb": ["isvsvn": svn], "tcbStatus": try status(item["status"], "a level")]
        try dated(&level, item)
        return level
    }

    static func module(_ item: [String: Any]) -> [String: Any] {
        [
            "mrsigner": item["mrsigner"] ?? zeroSigner, "attributes": item["attributes"] ?? "0000000000000000",
            "attributesMask": item["attributesMask"] ?? "FFFFFFFFFFFFFFFF",
        ]
    }

    /// The TCB info document.
    func tcbInfo(status: TCBStatus, issue: Int64, next: Int64) throws -> String {
        var levels: [[String: Any]]
        if let given = root["tcbLevels"] {
            guard let list = given as? [Any], !list.isEmpty else {
                throw SoftwareTEEError(.tcbLevels, "tcbLevels must be a non-empty list")
            }
            levels = try list.map(Self.platformLevel)
        } else {
            // The status option: for a status other than UpToDate an
            // unreachable UpToDate level comes first.
            levels = []
            if status != .upToDate {
                var better = TestPlatform.tdxComponents.map(Int.init)
                better[2] += 1
                levels.append(try Self.platformLevel(["tdx": better, "status": "UpToDate"]))
            }
            levels.append(
                try Self.platformLevel([
                    "status": status.rawValue, "advisories": status == .upToDate ? [] : TestPlatform.advisories,
                ]))
        }
        var identities: [[String: Any]] = [
            Self.module([:]).merging(
                ["id": "TDX_01", "tcbLevels": [try Self.isvLevel(["isvsvn": 4, "status": "UpToDate"])]]
            ) { $1 }
        ]
        if let given = root["tdxModuleIdentities"] {
            guard let list = given as? [[String: Any]] else {
                throw SoftwareTEEError(.tcbLevels, "tdxModuleIdentities must be a list of objects")
            }
            identities = try list.map { item in
                guard let id = item["id"] as? String else {
                    throw SoftwareTEEError(.tcbLevels, "a module identity needs an id")
                }
                let levels = try ((item["levels"] ?? item["tcbLevels"]) as? [Any] ?? []).map(Self.isvLevel)
                return Self.module(item).merging(["id": id, "tcbLevels": levels]) { $1 }
            }
        }
        var document: [String: Any] = [
            "id": "TDX", "version": 3, "issueDate": formatISO8601(issue), "nextUpdate": formatISO8601(next),
            "fmspc": TestPlatform.fmspc.hexString.uppercased(), "pceId": TestPlatform.pceID.hexString, "tcbType": 0,
            "tcbEvaluationDataNumber": 17, "tdxModuleIdentities": identities, "tcbLevels": levels,
        ]
        if root.keys.contains("tdxModule") {
            if let module = root["tdxModule"] as? [String: Any] { document["tdxModule"] = Self.module(module) }
        } else {
            document["tdxModule"] = Self.module([:])
        }
        return try Self.serialize(try Self.override(document, with: root["tcbInfo"], "tcbInfo"))
    }

    /// The QE identity document.
    func qeIdentity(issue: Int64, next: Int64) throws -> String {
        var levels = [try Self.isvLevel(["isvsvn": Int(TestPlatform.qeISVSVN), "status": "UpToDate"])]
        if let given = root["qeLevels"] {
            guard let list = given as? [Any], !list.isEmpty else {
                throw SoftwareTEEError(.tcbLevels, "qeLevels must be a non-empty list")
            }
            levels = try list.map(Self.isvLevel)
        }
        let document: [String: Any] = [
            "id": "TD_QE", "version": 2, "issueDate": formatISO8601(issue), "nextUpdate": formatISO8601(next),
            "tcbEvaluationDataNumber": 17, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": TestPlatform.qeAttributes.hexString.uppercased(),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": TestPlatform.qeMRSigner.hexString.uppercased(), "isvprodid": Int(TestPlatform.qeISVProdID),
            "tcbLevels": levels,
        ]
        return try Self.serialize(try Self.override(document, with: root["qeIdentity"], "qeIdentity"))
    }

    private static func override(_ document: [String: Any], with changes: Any?, _ name: String) throws -> [String: Any]
    {
        guard let changes else { return document }
        guard let fields = changes as? [String: Any] else {
            throw SoftwareTEEError(.tcbLevels, "\(name) must be an object")
        }
        var out = document
        for (key, value) in fields { out[key] = value is NSNull ? nil : value }
        return out
    }

    private static func serialize(_ document: [String: Any]) throws -> String {
        let data = try JSONSerialization.data(
            withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
