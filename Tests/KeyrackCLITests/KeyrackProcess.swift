import Foundation
import KeyrackTestSupport
import Testing

/// The result of running the real `keyrack` binary.
struct ProcessResult {
    var status: Int32
    var standardOutput: Data
    var standardError: String

    var output: String { String(decoding: standardOutput, as: UTF8.self) }
}

struct CLITestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `keyrack` with `arguments`, feeding `input` on standard input.
func runKeyrack(_ arguments: [String], input: Data = Data()) async throws -> ProcessResult {
    try await offCooperativePool { try runKeyrackBlocking(arguments, input: input) }
}

func runKeyrackBlocking(_ arguments: [String], input: Data) throws -> ProcessResult {
    let process = Process()
    process.executableURL = try keyrackExecutable()
    process.arguments = arguments
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    // Write and read concurrently so a large output cannot block the child.
    let writer = Thread {
        stdin.fileHandleForWriting.write(input)
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let errorData = LockedData()
    let errorReader = Thread { errorData.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
    errorReader.start()
    let outputData = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !errorData.isSet { usleep(1000) }
    return ProcessResult(
        status: process.terminationStatus,
        standardOutput: outputData,
        standardError: String(decoding: errorData.value, as: UTF8.self)
    )
}

func runKeyrack(_ arguments: [String], text: String) async throws -> ProcessResult {
    try await runKeyrack(arguments, input: Data(text.utf8))
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data: Data?
    func set(_ value: Data) { lock.withLock { data = value } }
    var isSet: Bool { lock.withLock { data != nil } }
    var value: Data { lock.withLock { data ?? Data() } }
}
