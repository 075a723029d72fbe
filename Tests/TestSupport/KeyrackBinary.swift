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
/// (standard output and standard error, each whole).
func runToCompletionBlocking(
    _ executable: URL,
    _ arguments: [String],
    environment: [String: String] = [:],
    directory: URL? = nil
) throws -> (status: Int32, output: String, errors: String) {
    let process = Process()
    process.executableURL = executable
    if let directory { process.currentDirectoryURL = directory }
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    // Read standard error on another thread so neither pipe can fill up and block the child.
    let errorData = Mutex(Data())
    let reader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
    reader.start()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while reader.isExecuting || !reader.isFinished { usleep(1000) }
    return (
        process.terminationStatus,
        String(decoding: outputData, as: UTF8.self),
        String(decoding: errorData.withLock { $0 }, as: UTF8.self)
    )
}

/// Runs `executable` to completion (see ``runToCompletionBlocking``) on a
/// thread of its own, so that waiting for a long child never blocks one of
/// the few threads of Swift's cooperative pool that every async test shares.
public func runToCompletion(
    _ executable: URL,
    _ arguments: [String],
    environment: [String: String] = [:],
    directory: URL? = nil
) async throws -> (status: Int32, output: String, errors: String) {
    try await offCooperativePool {
        try runToCompletionBlocking(executable, arguments, environment: environment, directory: directory)
    }
}

/// Runs blocking `body` on a new thread and returns its result.
public func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
