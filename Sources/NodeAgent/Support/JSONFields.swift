import Foundation
import KeyrackCore

/// The codes of the errors of a file read through ``JSONFields``: each file
/// has its own, and these four are what ``JSONFields`` itself reports.
protocol JSONFieldCodes: ErrorCodes {
    /// The file is not valid JSON, or not a JSON object.
    static var syntax: Self { get }
    /// A field that must be there is missing.
    static var missing: Self { get }
    /// A field has a value of the wrong type or form.
    static var invalid: Self { get }
    /// A field is not one the file has (a misspelling, usually).
    static var unknownField: Self { get }
}

extension NodeConfigurationErrorCode: JSONFieldCodes {}
extension NodeAttestationPolicyErrorCode: JSONFieldCodes {}

/// Typed access to a JSON object's fields, for the files a node reads (its
/// configuration, its attestation policy): every error names the field by
/// its dotted path, and unknown fields are refused so that a misspelt one is
/// an error rather than a silent default.
struct JSONFields<Code: JSONFieldCodes> {
    typealias Failure = CodedError<Code>

    /// The object's fields.
    let object: [String: Any]
    /// The object's dotted path (empty at the top).
    let path: String

    /// Parses `data`, which must be a JSON object; `what` names it in errors.
    init(_ data: Data, what: String) throws(Failure) {
        guard let parsed = try? JSONSerialization.jsonObject(with: data) else {
            throw Failure(.syntax, "\(what) is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw Failure(.syntax, "\(what) must be a JSON object") }
        self.init(object: object, path: "")
    }

    init(object: [String: Any], path: String) {
        self.object = object
        self.path = path
    }

    /// The dotted path of `key`.
    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func refuseUnknownKeys(_ known: Set<String>) throws(Failure) {
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw Failure(
                .unknownField, "unknown field '\(name(unknown))' (known: \(known.sorted().joined(separator: ", ")))")
        }
    }

    func optionalString(_ key: String) throws(Failure) -> String? {
        guard let value = object[key] else { return nil }
        guard let string = value as? String, !string.isEmpty else {
            throw Failure(.invalid, "'\(name(key))' must be a non-empty string")
        }
        return string
    }

    func string(_ key: String) throws(Failure) -> String {
        guard let value = try optionalString(key) else { throw Failure(.missing, "'\(name(key))' is missing") }
        return value
    }

    func optionalStrings(_ key: String) throws(Failure) -> [String]? {
        guard let value = object[key] else { return nil }
        guard let strings = value as? [String] else {
            throw Failure(.invalid, "'\(name(key))' must be a list of strings")
        }
        return strings
    }

    func strings(_ key: String) throws(Failure) -> [String] {
        guard let value = try optionalStrings(key) else { throw Failure(.missing, "'\(name(key))' is missing") }
        return value
    }

    func optionalObject(_ key: String) throws(Failure) -> JSONFields? {
        guard let value = object[key] else { return nil }
        guard let nested = value as? [String: Any] else {
            throw Failure(.invalid, "'\(name(key))' must be a JSON object")
        }
        return JSONFields(object: nested, path: name(key))
    }

    func object(_ key: String) throws(Failure) -> JSONFields {
        guard let nested = try optionalObject(key) else { throw Failure(.missing, "'\(name(key))' is missing") }
        return nested
    }
}
