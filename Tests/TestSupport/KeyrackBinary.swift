import Foundation
import Synchronization

/// The `keyrack` executable built beside the test bundle.
public func keyrackExecutable() throws -> URL {
    let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    let candidate = me.deletingLastPathComponent().appendingPathComponent("keyrack")
    guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
        throw TestSupportError("keyrack binary not found at \(candidate.path); run `swift build` first")
    }
    return candidate
}

/// A long-running `keyrack` process (a server), stopped when released.
public final class KeyrackProcess: @unchecked Sendable {
    public let process: Process
    public let logFile: URL

    /// Starts `keyrack arguments` with `environment` added to ours; output goes to a log file.
    public init(_ arguments: [String], environment: [String: String]) throws {
        process = Process()
        process.executableURL = try keyrackExecutable()
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logFile)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// What the process has logged so far.
    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Sends a signal.
    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// SIGTERM, then waits for the exit status.
    @discardableResult
    public func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: logFile)
    }
}

/// Runs `executable` to completion and returns its status and output
/// (standard output and standard error, each whole). With `input`, it is
/// written to the child's standard input, which is then closed.
public func runProcessBlocking(
    _ executable: URL,
    _ arguments: [String],
    input: Data? = nil,
    environment: [String: String] = [:],
    directory: URL? = nil
) throws -> (status: Int32, output: Data, errors: Data) {
    let process = Process()
    process.executableURL = executable
    if let directory { process.currentDirectoryURL = directory }
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let stdin = Pipe()
    let output = Pipe()
    let errors = Pipe()
    if input != nil { process.standardInput = stdin }
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    // Write and read on other threads so that no pipe can fill up and block the child.
    if let input {
        Thread {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }.start()
    }
    let errorData = Mutex(Data())
    let reader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
    reader.start()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while reader.isExecuting || !reader.isFinished { usleep(1000) }
    return (process.terminationStatus, outputData, errorData.withLock { $0 })
}

/// Runs `executable` to completion (see ``runProcessBlocking``) on a
/// thread of its own, so that waiting for a long child never blocks one of
/// the few threads of Swift's cooperative pool that every async test shares.
public func runToCompletion(
    _ executable: URL,
    _ arguments: [String],
    environment: [String: String] = [:],
    directory: URL? = nil
) async throws -> (status: Int32, output: String, errors: String) {
    try await offCooperativePool {
        let result = try runProcessBlocking(executable, arguments, environment: environment, directory: directory)
        return (
            result.status, String(decoding: result.output, as: UTF8.self),
            String(decoding: result.errors, as: UTF8.self)
        )
    }
}

/// Runs blocking `body` on a new thread and returns its result.
public func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
