import Foundation
import KeyrackCore
import SecretSharing

/// A software measurement log: named SHA-256 digests of the files that make
/// up a node's software, as its software root of trust reports them.
///
/// Names are 1…255 bytes of UTF-8 and unique; the node's executable is
/// always measured, as `executable`.
public struct MeasurementLog: Sendable, Hashable, CustomStringConvertible {
    /// One measured file.
    public struct Entry: Sendable, Hashable {
        /// The measurement's name (`executable`, …), as policies name it.
        public let name: String
        /// SHA-256 of the file's contents.
        public let digest: [UInt8]
    }

    /// The entries, in the order they were measured.
    public let entries: [Entry]

    /// The most entries a log may have.
    public static let maximumEntries = 256

    /// A log from `(name, digest)` pairs.
    /// - Throws: ``NodeEvidenceError`` for an empty, over-long or repeated
    ///   name, a digest that is not 32 bytes, or too many entries.
    public init(_ pairs: [(name: String, digest: [UInt8])]) throws(NodeEvidenceError) {
        guard pairs.count <= Self.maximumEntries else {
            throw NodeEvidenceError(.log, "a measurement log has at most \(Self.maximumEntries) entries")
        }
        var seen = Set<String>()
        for (name, digest) in pairs {
            guard (1...255).contains(name.utf8.count) else {
                throw NodeEvidenceError(.log, "a measurement name is 1 to 255 bytes")
            }
            guard seen.insert(name).inserted else {
                throw NodeEvidenceError(.log, "measurement '\(name)' appears twice")
            }
            guard digest.count == 32 else {
                throw NodeEvidenceError(.log, "measurement '\(name)' is not a SHA-256 digest")
            }
        }
        entries = pairs.map { Entry(name: $0.name, digest: $0.digest) }
    }

    /// The digest measured under `name`.
    public subscript(name: String) -> [UInt8]? { entries.first { $0.name == name }?.digest }

    /// `name=hex` pairs, one per entry.
    public var description: String {
        entries.map { "\($0.name)=\($0.digest.hexString)" }.joined(separator: " ")
    }

    /// Measures `files` now (each digest from the cache in `cacheDirectory`
    /// when the file has not changed since it was last hashed). The operator
    /// tooling uses it to print a policy that allows the running binary:
    /// `NodeAttestationPolicy.json(allowing: try MeasurementLog.current(cacheDirectory: d))`.
    public static func current(
        files: [MeasuredFile] = [.executable],
        cacheDirectory: URL
    ) throws(NodeEvidenceError) -> MeasurementLog {
        try measure(files, cache: MeasurementCache(directory: cacheDirectory))
    }

    /// Measures `files` through `cache`.
    static func measure(_ files: [MeasuredFile], cache: MeasurementCache) throws(NodeEvidenceError) -> MeasurementLog {
        var pairs: [(name: String, digest: [UInt8])] = []
        for file in files {
            pairs.append((file.name, try cache.measure(file.path).digest))
        }
        return try MeasurementLog(pairs)
    }
}

/// A file a node measures into its software measurement log.
public struct MeasuredFile: Sendable, Hashable {
    /// The measurement's name in the log and in policies.
    public let name: String
    /// The file's path.
    public let path: String

    /// A file measured under `name`.
    public init(name: String, path: String) {
        self.name = name
        self.path = path
    }

    /// The running executable (`/proc/self/exe`), measured as `executable`.
    public static let executable = MeasuredFile(name: "executable", path: "/proc/self/exe")
}
