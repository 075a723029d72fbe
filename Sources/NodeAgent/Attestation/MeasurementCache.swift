import Crypto
import Foundation
import KeyrackCore
import SecretSharing

#if canImport(Glibc)
    import Glibc
#endif

/// File digests measured once per file version, the way Linux IMA does it.
///
/// Hashing a node's ~100 MB executable costs about 0.2 s of CPU, and a rack
/// of 32 node processes may start at once on two cores. So a digest is
/// cached in `directory/measurements.json`, keyed by the file's version:
/// `(st_dev, st_ino, st_size, st_mtim, st_ctim)` of the open file. Any write
/// to the file changes its mtime and ctime (and a rename or chmod its
/// ctime), so a changed file is hashed again; the same inode at the same
/// times and size is taken as unchanged, as IMA does with `i_version`.
///
/// Measurements of one directory are serialized by an exclusive `flock` on
/// `directory/measurements.lock`, so processes starting together hash a
/// file once and the others read the result. The cache is written
/// atomically (temporary file, fsync, rename); a cache that does not parse
/// is ignored and rewritten. It holds at most 64 digests.
///
/// The cache is as trusted as the executable it describes: keep the
/// directory owned by the node's user (it is created with mode 0700).
public struct MeasurementCache: Sendable {
    /// The directory holding the cache and its lock.
    public let directory: URL

    static let cacheName = "measurements.json"
    static let lockName = "measurements.lock"
    static let format = "keyrack-measurement-cache/1"
    static let capacity = 64

    /// A cache in `directory` (created when first used).
    public init(directory: URL) { self.directory = directory }

    /// A file's digest, and whether it came from the cache.
    public struct Measurement: Sendable, Hashable {
        /// SHA-256 of the file's contents.
        public let digest: [UInt8]
        /// True when the digest was read from the cache rather than hashed.
        public let fromCache: Bool
    }

    /// Measures the file at `path` (following links, so `/proc/self/exe`
    /// is the running executable).
    public func measure(_ path: String) throws(NodeEvidenceError) -> Measurement {
        let file = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { throw NodeEvidenceError(.measure, "cannot open \(path) to measure it: errno \(errno)") }
        defer { close(file) }
        guard let before = Self.version(of: file) else { throw NodeEvidenceError(.measure, "cannot stat \(path)") }

        let lock = try lockDirectory()
        defer { close(lock) }  // releases the flock
        var table = readTable()
        if let hex = table[before], let digest = [UInt8](hex: hex), digest.count == 32 {
            return Measurement(digest: digest, fromCache: true)
        }
        let digest = try Self.hash(file, path: path)
        // A file that changed while it was hashed is not cached.
        if Self.version(of: file) == before {
            if table.count >= Self.capacity { table.removeAll() }
            table[before] = digest.hexString
            try writeTable(table)
        }
        return Measurement(digest: digest, fromCache: false)
    }

    /// The version key of an open file.
    static func version(of file: Int32) -> String? {
        var status = stat()
        guard fstat(file, &status) == 0 else { return nil }
        return [
            UInt64(status.st_dev), UInt64(status.st_ino), UInt64(status.st_size),
            UInt64(status.st_mtim.tv_sec), UInt64(status.st_mtim.tv_nsec),
            UInt64(status.st_ctim.tv_sec), UInt64(status.st_ctim.tv_nsec),
        ].map(String.init).joined(separator: ":")
    }

    static func hash(_ file: Int32, path: String) throws(NodeEvidenceError) -> [UInt8] {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: off_t = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(file, $0.baseAddress, $0.count, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw NodeEvidenceError(.measure, "cannot read \(path) to measure it: errno \(errno)")
            }
            if count == 0 { break }
            hasher.update(data: buffer[..<count])
            offset += off_t(count)
        }
        return Array(hasher.finalize())
    }

    private func lockDirectory() throws(NodeEvidenceError) -> Int32 {
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw NodeEvidenceError(.cache, "cannot create the measurement cache directory \(directory.path)")
        }
        let path = directory.appendingPathComponent(Self.lockName).path
        let lock = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw NodeEvidenceError(.cache, "cannot open \(path): errno \(errno)") }
        while flock(lock, LOCK_EX) != 0 {
            guard errno == EINTR else {
                close(lock)
                throw NodeEvidenceError(.cache, "cannot lock \(path): errno \(errno)")
            }
        }
        return lock
    }

    private struct Table: Codable {
        var format: String
        var digests: [String: String]
    }

    /// The cached digests by version key; empty when the file is missing
    /// or does not parse (it is then rewritten).
    private func readTable() -> [String: String] {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(Self.cacheName).path),
            let table = try? JSONDecoder().decode(Table.self, from: data), table.format == Self.format
        else { return [:] }
        return table.digests
    }

    private func writeTable(_ digests: [String: String]) throws(NodeEvidenceError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            let data = try encoder.encode(Table(format: Self.format, digests: digests))
            try writeAtomically(Array(data), to: directory, name: Self.cacheName)
        } catch let error as AtomicFileError {
            throw NodeEvidenceError(.cache, "cannot write the measurement cache: \(error.reason)")
        } catch {
            throw NodeEvidenceError(.cache, "cannot encode the measurement cache")
        }
    }
}
