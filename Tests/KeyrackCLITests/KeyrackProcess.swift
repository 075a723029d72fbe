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
func runKeyrack(
    _ arguments: [String], input: Data = Data(), environment: [String: String] = [:]
) async throws -> ProcessResult {
    let result = try await offCooperativePool {
        try runProcessBlocking(keyrackExecutable(), arguments, input: input, environment: environment)
    }
    return ProcessResult(
        status: result.status,
        standardOutput: result.output,
        standardError: String(decoding: result.errors, as: UTF8.self)
    )
}

func runKeyrack(_ arguments: [String], text: String) async throws -> ProcessResult {
    try await runKeyrack(arguments, input: Data(text.utf8))
}
