import Foundation
import KeyrackCore

#if canImport(Glibc)
    import Glibc
#endif

/// A file that could not be written atomically, and why.
typealias AtomicFileError = CodedError<AtomicFileErrorCode>

/// The codes of ``AtomicFileError``.
struct AtomicFileErrorCode: ErrorCodes {
    let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// What was to be written could not be encoded.
    static let encode = AtomicFileErrorCode("NODE-FILE-ENCODE")
    /// The temporary file cannot be created (permissions, a missing directory).
    static let create = AtomicFileErrorCode("NODE-FILE-CREATE")
    /// The temporary file cannot be written or fsynced (I/O error, disk full).
    static let write = AtomicFileErrorCode("NODE-FILE-WRITE")
    /// The temporary file cannot be renamed over the file.
    static let rename = AtomicFileErrorCode("NODE-FILE-RENAME")
    /// The directory cannot be opened or fsynced, so the rename may not survive a crash.
    static let syncDirectory = AtomicFileErrorCode("NODE-FILE-SYNC-DIRECTORY")
}

/// Writes `bytes` to `directory/name` so that a crash leaves either the old
/// file or the new one: a temporary file in the same directory (mode 0600)
/// is written, fsynced and renamed over `name`, and the directory is fsynced.
func writeAtomically(_ bytes: [UInt8], to directory: URL, name: String) throws(AtomicFileError) {
    let final = directory.appendingPathComponent(name).path
    let temporary = final + ".tmp-\(getpid())"
    let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw AtomicFileError(.create, "cannot create \(temporary): errno \(errno)") }
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes {
            Glibc.write(descriptor, $0.baseAddress! + offset, bytes.count - offset)
        }
        if written < 0 {
            if errno == EINTR { continue }
            close(descriptor)
            unlink(temporary)
            throw AtomicFileError(.write, "cannot write \(temporary): errno \(errno)")
        }
        offset += written
    }
    guard fsync(descriptor) == 0 else {
        close(descriptor)
        unlink(temporary)
        throw AtomicFileError(.write, "cannot fsync \(temporary): errno \(errno)")
    }
    close(descriptor)
    guard rename(temporary, final) == 0 else {
        unlink(temporary)
        throw AtomicFileError(.rename, "cannot rename \(temporary) to \(final): errno \(errno)")
    }
    // The rename itself must survive a crash: a directory that cannot be
    // synced is a failed write, not a silent one.
    let directoryDescriptor = Glibc.open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard directoryDescriptor >= 0 else {
        throw AtomicFileError(.syncDirectory, "cannot open \(directory.path) to fsync it: errno \(errno)")
    }
    defer { close(directoryDescriptor) }
    guard fsync(directoryDescriptor) == 0 else {
        throw AtomicFileError(.syncDirectory, "cannot fsync \(directory.path): errno \(errno)")
    }
}

/// What reading a file found: its bytes, nothing (it does not exist), or an error.
enum FileRead: Equatable {
    case contents([UInt8])
    case missing
    case unreadable(String)
}

/// Reads the whole file at `path`, telling a file that does not exist
/// (`ENOENT`) apart from one that exists but cannot be read (permissions,
/// I/O errors, a directory in its place).
func readFile(atPath path: String) -> FileRead {
    let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        let code = errno
        return code == ENOENT ? .missing : .unreadable("cannot open: \(String(cString: strerror(code)))")
    }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            return .unreadable("cannot read: \(String(cString: strerror(errno)))")
        }
        if count == 0 { return .contents(bytes) }
        bytes += chunk.prefix(count)
    }
}

/// What reading the copies of one file in several directories found.
struct Copies<Value> {
    /// The newest copy that opened, with its generation.
    var newest: (generation: UInt64, value: Value)?
    /// Copies that exist but could not be read or opened, with the reason.
    var problems: [(path: String, reason: String)] = []
    /// Paths where no copy exists.
    var missing: [String] = []
    /// How many copies exist (usable or not).
    var existing = 0
}

/// Reads `name` in each of `directories` and keeps the copy of the highest
/// generation that `open` accepts; `open` throws, with a reason for
/// people, for a copy it refuses.
func readCopies<Value>(
    of name: String,
    in directories: [URL],
    open: ([UInt8]) throws(CopyRefused) -> (generation: UInt64, value: Value)
) -> Copies<Value> {
    var copies = Copies<Value>()
    for directory in directories {
        let path = directory.appendingPathComponent(name).path
        switch readFile(atPath: path) {
        case .missing:
            copies.missing.append(path)
        case .unreadable(let reason):
            copies.existing += 1
            copies.problems.append((path, reason))
        case .contents(let bytes):
            copies.existing += 1
            do {
                let opened = try open(bytes)
                if copies.newest.map({ opened.generation > $0.generation }) ?? true { copies.newest = opened }
            } catch {
                copies.problems.append((path, error.reason))
            }
        }
    }
    return copies
}

/// A copy that `readCopies`' `open` refused, and why.
struct CopyRefused: Error {
    let reason: String
}
