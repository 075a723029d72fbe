import ArgumentParser
import KeyrackCore
import Logging
import SecretSharing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failure to report as one line on standard error, exiting with status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Runs `body`; on a failure, prints `keyrack: <what went wrong>` on standard
/// error and exits with status 1 (nothing has been written to standard
/// output, since commands write their output only once it is complete).
func reportingFailures(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch {
        writeStandardError("keyrack: \(error)\n")
        throw ExitCode(1)
    }
}

/// `reportingFailures` for async commands.
func reportingAsyncFailures(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch {
        writeStandardError("keyrack: \(error)\n")
        throw ExitCode(1)
    }
}

/// Writes secret bytes to `path` with mode 0600, atomically (a temporary
/// file in the same directory, fsync, rename).
func writeSecretFile(_ secret: SecretBytes, to path: String) throws {
    let temporary = path + ".tmp-\(getpid())"
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw CommandFailure("cannot create \(temporary) (errno \(errno))") }
    var ok = false
    defer {
        close(descriptor)
        if !ok { unlink(temporary) }
    }
    try secret.withUnsafeBytes { try writeAll($0, to: descriptor) }
    guard fsync(descriptor) == 0, rename(temporary, path) == 0 else {
        throw CommandFailure("cannot write \(path) (errno \(errno))")
    }
    ok = true
}

func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { try? writeAll(UnsafeRawBufferPointer($0), to: STDERR_FILENO) }
}

/// Writes all of `bytes` to standard output in one go.
func writeStandardOutput(_ bytes: UnsafeRawBufferPointer) throws {
    try writeAll(bytes, to: STDOUT_FILENO)
}

/// Writes every byte to a file descriptor, retrying short writes.
private func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32) throws {
    var offset = 0
    while offset < bytes.count {
        let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        if written < 0 {
            if errno == EINTR { continue }
            throw CommandFailure("could not write to file descriptor \(descriptor) (errno \(errno))")
        }
        offset += written
    }
}

func writeStandardOutput(_ text: String) throws {
    var text = text
    try text.withUTF8 { try writeStandardOutput(UnsafeRawBufferPointer($0)) }
}

/// Reads standard input to its end into zeroizing storage.
func readStandardInput(limit: Int = 16 << 20) throws -> SecretBytes {
    var capacity = 4096
    var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
    var used = 0
    defer {
        secureZero(buffer)
        buffer.deallocate()
    }
    while true {
        if used == capacity {
            guard capacity < limit else { throw CommandFailure("standard input is larger than \(limit) bytes") }
            let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity * 2, alignment: 16)
            grown.copyMemory(from: UnsafeRawBufferPointer(buffer))
            secureZero(buffer)
            buffer.deallocate()
            buffer = grown
            capacity *= 2
        }
        let got = read(STDIN_FILENO, buffer.baseAddress! + used, capacity - used)
        if got < 0 {
            if errno == EINTR { continue }
            throw CommandFailure("could not read standard input (errno \(errno))")
        }
        if got == 0 { break }
        used += got
    }
    return SecretBytes(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
}

/// Standard input as text lines (for share lines and hex input).
func readStandardInputLines() throws -> [Substring] {
    let input = try readStandardInput()
    let text = input.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    return text.split(separator: "\n", omittingEmptySubsequences: false)
}

/// Sends every logger's lines at `level` or above to standard error.
func bootstrapLogging(level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
