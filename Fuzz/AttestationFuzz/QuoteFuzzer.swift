// libFuzzer entry point for the quote parser and verifier. Only part of the
// package when ENABLE_FUZZING is set; built and run by .ci/run:
//
//   ENABLE_FUZZING=1 swift build --scratch-path .build-fuzz --product AttestationFuzz \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//   KEYRACK_FUZZ_COLLATERAL=../shared/testdata/tdx/tdx_v4_uptodate.collateral.json \
//       .build-fuzz/debug/AttestationFuzz -max_total_time=60 CORPUS_DIR
//
// Every input goes through `Quote(bytes:)`; what parses also has its TD 1.5
// fields read, goes through the PCK extension parser and, when
// KEYRACK_FUZZ_COLLATERAL names collateral files (`file[=root.der]`,
// separated by ':', the root defaulting to Intel's), through full
// verification against each. An input that is not a quote is decoded as a
// collateral document, a TCB info, a QE identity and a PCCS TCB info answer
// (the new collateral fields: module identities, tcbDate,
// tcbEvaluationDataNumber). Any trap or sanitizer report is a bug.
import Attestation
import CFuzzerDriver
import Foundation

private let targets: [(Collateral, QuoteVerifier)] = {
    guard let list = ProcessInfo.processInfo.environment["KEYRACK_FUZZ_COLLATERAL"] else { return [] }
    return list.split(separator: ":").compactMap { item in
        let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
        guard let data = FileManager.default.contents(atPath: parts[0]), let collateral = try? Collateral(json: data)
        else { return nil }
        var anchor = TrustAnchor.intelSGXRootCA
        if parts.count == 2, let root = FileManager.default.contents(atPath: parts[1]),
            let parsed = try? TrustAnchor(bytes: [UInt8](root))
        {
            anchor = parsed
        }
        return (collateral, QuoteVerifier(trustAnchor: anchor))
    }
}()

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
    guard let quote = try? Quote(bytes: bytes) else {
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? Collateral(json: Data(bytes))
        _ = try? TCBInfo(json: text)
        _ = try? QEIdentity(json: text)
        let empty = PCCSResponse(body: [], issuerChain: "")
        _ = try? PCCSClient.collateral(
            pckCRL: empty, tcbInfo: PCCSResponse(body: bytes, issuerChain: ""), qeIdentity: empty, rootCACRL: empty)
        return 0
    }
    _ = (quote.report.teeTCBSVN2, quote.report.mrServiceTD, quote.report.tdAttributesValue)
    _ = try? quote.unverifiedPCKExtensions()
    for (collateral, verifier) in targets {
        _ = try? verifier.verify(quote: quote, collateral: collateral, now: 1_750_332_747)
        _ = try? verifier.verify(quote: quote, collateral: collateral, now: 1_780_000_000)
    }
    return 0
}
