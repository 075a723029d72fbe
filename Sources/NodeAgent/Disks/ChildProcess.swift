import CKeyrackSystem
import Foundation
import KeyrackCore
import SecretSharing

#if canImport(Glibc)
    import Glibc
#endif

/// A program run to completion with secrets on pipes: each secret is
/// written into a pipe the child inherits (its standard input, or a
/// descriptor from 3 up that the program is told to read as `/dev/fd/N`),
/// never into its arguments, its environment or a file. The child inherits
/// no other descriptor of this process, starts with default signal
/// handling, and is killed if it outlives its deadline. Blocking: call it
/// off Swift's cooperative pool.
struct ChildProcess {
    /// What a finished child left.
    struct Finished: Sendable, Equatable {
        /// Its exit status, or 128 + the signal that ended it.
        var status: Int32
        /// Its standard output (at most ``maximumOutput`` bytes).
        var output: [UInt8]
        /// Its standard error (at most ``maximumOutput`` bytes).
        var errors: [UInt8]
        /// Whether it was killed for running past its deadline.
        var timedOut: Bool

        /// Standard error's last non-empty line (programs put their reason there).
        var lastErrorLine: String {
            String(decoding: errors, as: UTF8.self).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty } ?? ""
        }
    }

    /// More output than this is dropped (a LUKS2 header's JSON is at most 4 MiB).
    static let maximumOutput = 8 << 20
    /// A secret must fit a pipe's buffer, so it is written before the child starts and no write can block.
    static let maximumSecret = 60_000

    /// Runs `executable` with `arguments` and a minimal environment; `stdin`
    /// and `extra` (descriptors 3, 4, …) are fed with the secrets given.
    static func run(
        _ executable: String,
        _ arguments: [String],
        stdin: SecretBytes? = nil,
        extra: [SecretBytes] = [],
        timeout: Duration
    ) throws(ChildProcessError) -> Finished {
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer {
            for descriptor in parentEnds + childEnds where descriptor >= 0 { close(descriptor) }
        }
        func pipeFeeding(_ secret: SecretBytes?) throws(ChildProcessError) -> Int32 {
            guard let secret else {
                let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
                guard null >= 0 else { throw ChildProcessError(.pipe, "cannot open /dev/null: errno \(errno)") }
                childEnds.append(null)
                return null
            }
            guard secret.count <= maximumSecret else {
                throw ChildProcessError(.secretTooLong, "a key longer than 60000 bytes")
            }
            var ends: [Int32] = [-1, -1]
            guard keyrack_pipe(&ends) == 0 else {
                throw ChildProcessError(.pipe, "cannot create a pipe: errno \(errno)")
            }
            childEnds.append(ends[0])
            defer { close(ends[1]) }
            let written = secret.withUnsafeBytes { bytes -> Bool in
                var offset = 0
                while offset < bytes.count {
                    let count = write(ends[1], bytes.baseAddress! + offset, bytes.count - offset)
                    if count < 0 {
                        if errno == EINTR { continue }
                        return false
                    }
                    offset += count
                }
                return true
            }
            guard written else { throw ChildProcessError(.pipe, "cannot write to a pipe: errno \(errno)") }
            return ends[0]
        }
        func outputPipe() throws(ChildProcessError) -> (read: Int32, write: Int32) {
            var ends: [Int32] = [-1, -1]
            guard keyrack_pipe(&ends) == 0 else {
                throw ChildProcessError(.pipe, "cannot create a pipe: errno \(errno)")
            }
            parentEnds.append(ends[0])
            childEnds.append(ends[1])
            return (ends[0], ends[1])
        }
        let input = try pipeFeeding(stdin)
        let output = try outputPipe()
        let errors = try outputPipe()
        var descriptors = [input, output.write, errors.write]
        for secret in extra { descriptors.append(try pipeFeeding(secret)) }

        let argv = ([executable] + arguments).map { strdup($0) }
        let environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
        let envp = environment.map { strdup($0) }
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (envp + [nil]).withUnsafeBufferPointer { envpBuffer in
                keyrack_spawn(
                    executable, argvBuffer.baseAddress, envpBuffer.baseAddress, descriptors, Int32(descriptors.count),
                    &pid)
            }
        }
        guard spawned == 0 else { throw ChildProcessError(.spawn, "cannot start \(executable): errno \(spawned)") }
        // The child holds its ends now; ours must close so that its output reaches end of file.
        for descriptor in childEnds { close(descriptor) }
        childEnds = []
        descriptors = []

        let deadline = ContinuousClock.now + timeout
        var collected: [Int32: [UInt8]] = [output.read: [], errors.read: []]
        var reading = [output.read, errors.read]
        var timedOut = false
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !reading.isEmpty {
            let left = deadline - ContinuousClock.now
            guard left > .zero else {
                timedOut = true
                break
            }
            var polled = reading.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let milliseconds = Int32(min(left.components.seconds * 1000 + 1, 60_000))
            let ready = poll(&polled, nfds_t(polled.count), milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                timedOut = true
                break
            }
            for entry in polled where entry.revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    if collected[entry.fd, default: []].count < maximumOutput {
                        collected[entry.fd, default: []] += buffer[0..<count]
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    reading.removeAll { $0 == entry.fd }
                }
            }
        }
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else {
                throw ChildProcessError(.wait, "cannot wait for \(executable): errno \(errno)")
            }
        }
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Finished(
            status: exitStatus, output: collected[output.read] ?? [], errors: collected[errors.read] ?? [],
            timedOut: timedOut)
    }
}

/// A child process that could not be run.
typealias ChildProcessError = CodedError<ChildProcessErrorCode>

/// The codes of ``ChildProcessError``.
struct ChildProcessErrorCode: ErrorCodes {
    let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// A pipe (or `/dev/null`) for the child's standard streams or secrets cannot be set up.
    static let pipe = ChildProcessErrorCode("NODE-CHILD-PIPE")
    /// A secret is too long to be written into a pipe before the child starts.
    static let secretTooLong = ChildProcessErrorCode("NODE-CHILD-SECRET-TOO-LONG")
    /// The program cannot be started.
    static let spawn = ChildProcessErrorCode("NODE-CHILD-SPAWN")
    /// The child cannot be waited for.
    static let wait = ChildProcessErrorCode("NODE-CHILD-WAIT")
}
