// libFuzzer entry point for the quote parser and verifier. Only part of the
// package when ENABLE_FUZZING is set; built and run by .ci/run:
//
//   ENABLE_FUZZING=1 swift build --scratch-path .build-fuzz --product AttestationFuzz \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//   KEYRACK_FUZZ_COLLATERAL=../shared/testdata/tdx/tdx_v4_uptodate.collateral.json \
//       .build-fuzz/debug/AttestationFuzz -max_total_time=60 CORPUS_DIR
//
// Every input goes through `Quote(bytes:)`; what parses also goes through the
// PCK extension parser and, when KEYRACK_FUZZ_COLLATERAL names a collateral
// file, through full verification. Any trap or sanitizer report is a bug.
import Attestation
import CFuzzerDriver
import Foundation

private let collateral: Collateral? = {
    guard let path = ProcessInfo.processInfo.environment["KEYRACK_FUZZ_COLLATERAL"],
        let data = FileManager.default.contents(atPath: path)
    else { return nil }
    return try? Collateral(json: data)
}()

private let verifier = QuoteVerifier()

/// SwiftPM links executables with `main` renamed to `<target>_main`, so the
/// program starts here and hands over to libFuzzer's driver.
@_cdecl("AttestationFuzz_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, count in fuzz(data, count) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = start.map { [UInt8](UnsafeBufferPointer(start: $0, count: count)) } ?? []
    guard let quote = try? Quote(bytes: bytes) else { return 0 }
    _ = try? quote.unverifiedPCKExtensions()
    if let collateral {
        _ = try? verifier.verify(quote: quote, collateral: collateral, now: 1_750_332_747)
    }
    return 0
}
