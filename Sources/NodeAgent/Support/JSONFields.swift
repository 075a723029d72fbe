import Foundation

/// An error that is a sentence: the files NodeAgent reads report their
/// problems this way.
protocol ReasonError: Error {
    init(_ reason: String)
}

extension NodeConfigurationError: ReasonError {}
extension NodeAttestationPolicyError: ReasonError {}

/// Typed access to a JSON object's fields, for the files a node reads (its
/// configuration, its attestation policy): every error names the field by
/// its dotted path, and unknown fields are refused so that a misspelt one is
/// an error rather than a silent default.
struct JSONFields<Failure: ReasonError> {
    /// The object's fields.
    let object: [String: Any]
    /// The object's dotted path (empty at the top).
    let path: String

    /// Parses `data`, which must be a JSON object; `what` names it in errors.
    init(_ data: Data, what: String) throws(Failure) {
        guard let parsed = try? JSONSerialization.jsonObject(with: data) else {
            throw Failure("\(what) is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw Failure("\(what) must be a JSON object") }
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
            throw Failure("unknown field '\(name(unknown))' (known: \(known.sorted().joined(separator: ", ")))")
        }
    }

    func optionalString(_ key: String) throws(Failure) -> String? {
        guard let value = object[key] else { return nil }
        guard let string = value as? String, !string.isEmpty else {
            throw Failure("'\(name(key))' must be a non-empty string")
        }
        return string
    }

    func string(_ key: String) throws(Failure) -> String {
        guard let value = try optionalString(key) else { throw Failure("'\(name(key))' is missing") }
        return value
    }

    func optionalStrings(_ key: String) throws(Failure) -> [String]? {
        guard let value = object[key] else { return nil }
        guard let strings = value as? [String] else { throw Failure("'\(name(key))' must be a list of strings") }
        return strings
    }

    func strings(_ key: String) throws(Failure) -> [String] {
        guard let value = try optionalStrings(key) else { throw Failure("'\(name(key))' is missing") }
        return value
    }

    func optionalObject(_ key: String) throws(Failure) -> JSONFields? {
        guard let value = object[key] else { return nil }
        guard let nested = value as? [String: Any] else { throw Failure("'\(name(key))' must be a JSON object") }
        return JSONFields(object: nested, path: name(key))
    }

    func object(_ key: String) throws(Failure) -> JSONFields {
        guard let nested = try optionalObject(key) else { throw Failure("'\(name(key))' is missing") }
        return nested
    }
}
