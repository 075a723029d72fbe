import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A file that could not be written atomically, and why.
struct AtomicFileError: Error, Equatable, Sendable {
    let reason: String
}

/// Writes `bytes` to `directory/name` so that a crash leaves either the old
/// file or the new one: a temporary file in the same directory (mode 0600)
/// is written, fsynced and renamed over `name`, and the directory is fsynced.
func writeAtomically(_ bytes: [UInt8], to directory: URL, name: String) throws(AtomicFileError) {
    let final = directory.appendingPathComponent(name).path
    let temporary = final + ".tmp-\(getpid())"
    let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw AtomicFileError(reason: "cannot create \(temporary): errno \(errno)") }
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes {
            Glibc.write(descriptor, $0.baseAddress! + offset, bytes.count - offset)
        }
        if written < 0 {
            if errno == EINTR { continue }
            close(descriptor)
            unlink(temporary)
            throw AtomicFileError(reason: "cannot write \(temporary): errno \(errno)")
        }
        offset += written
    }
    guard fsync(descriptor) == 0 else {
        close(descriptor)
        unlink(temporary)
        throw AtomicFileError(reason: "cannot fsync \(temporary): errno \(errno)")
    }
    close(descriptor)
    guard rename(temporary, final) == 0 else {
        unlink(temporary)
        throw AtomicFileError(reason: "cannot rename \(temporary) to \(final): errno \(errno)")
    }
    // The rename itself must survive a crash.
    let directoryDescriptor = Glibc.open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if directoryDescriptor >= 0 {
        _ = fsync(directoryDescriptor)
        close(directoryDescriptor)
    }
}
