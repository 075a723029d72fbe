import Foundation
import KeyrackCore
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One HTTP answer of a PCCS: its body and the issuer-chain header that goes with it.
public struct PCCSResponse: Sendable {
    /// The body, as served.
    public let body: [UInt8]
    /// The issuer chain header, URL-decoded (PEM), or `nil` if the response had none.
    public let issuerChain: String?

    /// A response from its parts.
    public init(body: [UInt8], issuerChain: String?) {
        self.body = body
        self.issuerChain = issuerChain
    }
}

/// Collateral from a PCCS or Intel's PCS, v4 API (the paths of dcap-qvl's
/// `get_collateral` and Intel's QCNL): `/sgx/certification/v4/pckcrl?ca=…&encoding=der`
/// (issuer chain in `SGX-PCK-CRL-Issuer-Chain`), `/tdx/certification/v4/tcb?fmspc=…`
/// (`TCB-Info-Issuer-Chain`), `/tdx/certification/v4/qe/identity`
/// (`SGX-Enclave-Identity-Issuer-Chain`) and `/sgx/certification/v4/rootcacrl`.
/// The signed `tcbInfo` and `enclaveIdentity` are kept byte for byte as
/// served: the signatures cover exactly that text.
public struct PCCSClient: Sendable {
    /// The service's base URL (a trailing `/sgx/certification/v4` or `/tdx/certification/v4` is dropped).
    public let baseURL: String
    /// Seconds to wait for each answer.
    public var timeout: TimeInterval = 10

    /// A client for the PCCS at `url`.
    public init(url: String) {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        for suffix in ["/sgx/certification/v4", "/tdx/certification/v4"] where base.hasSuffix(suffix) {
            base.removeLast(suffix.count)
        }
        baseURL = base
    }

    /// The four paths fetched for a platform of `fmspc` (upper-case hex) under PCK CA `ca` (`platform` or `processor`).
    public static func paths(fmspc: String, ca: String) -> (pckCRL: String, tcb: String, qe: String, rootCRL: String) {
        (
            "/sgx/certification/v4/pckcrl?ca=\(ca)&encoding=der", "/tdx/certification/v4/tcb?fmspc=\(fmspc)",
            "/tdx/certification/v4/qe/identity", "/sgx/certification/v4/rootcacrl"
        )
    }

    /// Fetches and assembles the collateral for `fmspc` and `ca` (nothing is verified here).
    /// - Throws: ``AttestationError`` with code ``AttestationError/Code/collateralUnavailable``.
    public func fetch(fmspc: String, ca: String) async throws(AttestationError) -> Collateral {
        let paths = Self.paths(fmspc: fmspc, ca: ca)
        let pckCRL = try await get(paths.pckCRL, header: "SGX-PCK-CRL-Issuer-Chain")
        let tcb = try await get(paths.tcb, header: "TCB-Info-Issuer-Chain", alternative: "SGX-TCB-Info-Issuer-Chain")
        let qe = try await get(paths.qe, header: "SGX-Enclave-Identity-Issuer-Chain")
        let root = try await get(paths.rootCRL, header: nil)
        return try Self.collateral(pckCRL: pckCRL, tcbInfo: tcb, qeIdentity: qe, rootCACRL: root)
    }

    private func get(_ path: String, header: String?, alternative: String? = nil) async throws(AttestationError)
        -> PCCSResponse
    {
        func fail(_ reason: String) -> AttestationError {
            AttestationError(.collateralUnavailable, step: .parseCollateral, "PCCS \(path): \(reason)")
        }
        guard let url = URL(string: baseURL + path) else { throw fail("not a URL: \(baseURL)") }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.httpMethod = "GET"
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw fail("unreachable (\(error.localizedDescription))")
        }
        guard let http = response as? HTTPURLResponse else { throw fail("not an HTTP answer") }
        guard http.statusCode == 200 else { throw fail("HTTP \(http.statusCode)") }
        var chain: String? = nil
        for name in [header, alternative].compactMap({ $0 }) where chain == nil {
            chain = (http.value(forHTTPHeaderField: name)).flatMap { $0.removingPercentEncoding }
        }
        if header != nil, chain == nil { throw fail("no \(header ?? "") header") }
        return PCCSResponse(body: [UInt8](data), issuerChain: chain)
    }

    /// Assembles collateral from the four PCCS answers: the PCK CRL (DER,
    /// hex or PEM), the TCB info and QE identity responses (`{"tcbInfo": …,
    /// "signature": hex}`, `{"enclaveIdentity": …, "signature": hex}`) and
    /// the root CA CRL (hex, as a PCCS serves it, or DER).
    public static func collateral(
        pckCRL: PCCSResponse, tcbInfo: PCCSResponse, qeIdentity: PCCSResponse, rootCACRL: PCCSResponse
    ) throws(AttestationError) -> Collateral {
        func fail(_ reason: String) -> AttestationError {
            AttestationError(.collateralUnavailable, step: .parseCollateral, "PCCS answer: \(reason)")
        }
        guard let pckChain = pckCRL.issuerChain, let tcbChain = tcbInfo.issuerChain,
            let qeChain = qeIdentity.issuerChain
        else { throw fail("an issuer chain header is missing") }
        let (tcb, tcbSignature) = try signed(tcbInfo.body, member: "tcbInfo", fail: fail)
        let (qe, qeSignature) = try signed(qeIdentity.body, member: "enclaveIdentity", fail: fail)
        return Collateral(
            pckCRLIssuerChain: pckChain, rootCACRL: try crl(rootCACRL.body, "root CA CRL", fail: fail),
            pckCRL: try crl(pckCRL.body, "PCK CRL", fail: fail), tcbInfoIssuerChain: tcbChain, tcbInfo: tcb,
            tcbInfoSignature: tcbSignature, qeIdentityIssuerChain: qeChain, qeIdentity: qe,
            qeIdentitySignature: qeSignature)
    }

    /// A CRL served as DER, as hex text or as PEM.
    static func crl(_ body: [UInt8], _ name: String, fail: (String) -> AttestationError) throws(AttestationError)
        -> [UInt8]
    {
        if body.first == 0x30 { return body }
        let text = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if let bytes = [UInt8](hex: text), !bytes.isEmpty { return bytes }
        if text.hasPrefix("-----BEGIN X509 CRL-----") {
            let base64 = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            if let bytes = PEM.base64Decode(Array(base64.utf8)[...]) { return bytes }
        }
        throw fail("the \(name) is neither DER, hex nor PEM")
    }

    /// The raw text of `member` of a top-level JSON object and its hex `signature`.
    static func signed(_ body: [UInt8], member: String, fail: (String) -> AttestationError) throws(AttestationError)
        -> (String, [UInt8])
    {
        guard let raw = RawJSON.member(member, of: body), let signatureRaw = RawJSON.member("signature", of: body)
        else { throw fail("no \(member) and signature in the response") }
        let quoted = String(decoding: signatureRaw, as: UTF8.self)
        guard quoted.count >= 2, quoted.hasPrefix("\""), quoted.hasSuffix("\""),
            let signature = [UInt8](hex: String(quoted.dropFirst().dropLast()))
        else { throw fail("the \(member) signature is not hex") }
        return (String(decoding: raw, as: UTF8.self), signature)
    }
}

/// Finds the bytes of a member's value in a JSON object without re-encoding it.
enum RawJSON {
    /// The raw value of top-level `key` in the object `text`, or nil.
    static func member(_ key: String, of text: [UInt8]) -> ArraySlice<UInt8>? {
        var i = 0
        func skipSpace() { while i < text.count, [0x20, 0x09, 0x0A, 0x0D].contains(text[i]) { i += 1 } }
        /// Skips one string starting at a quote; false if unterminated.
        func skipString() -> Bool {
            i += 1
            while i < text.count {
                if text[i] == 0x5C {
                    i += 2
                    continue
                }
                if text[i] == 0x22 {
                    i += 1
                    return true
                }
                i += 1
            }
            return false
        }
        /// Skips one value; false if malformed.
        func skipValue() -> Bool {
            skipSpace()
            guard i < text.count else { return false }
            if text[i] == 0x22 { return skipString() }
            if text[i] == 0x7B || text[i] == 0x5B {
                var depth = 0
                while i < text.count {
                    switch text[i] {
                    case 0x22:
                        if !skipString() { return false }
                        continue
                    case 0x7B, 0x5B: depth += 1
                    case 0x7D, 0x5D:
                        depth -= 1
                        if depth == 0 {
                            i += 1
                            return true
                        }
                    default: break
                    }
                    i += 1
                }
                return false
            }
            while i < text.count, ![0x2C, 0x7D, 0x5D, 0x20, 0x0A, 0x0D, 0x09].contains(text[i]) { i += 1 }
            return true
        }
        skipSpace()
        guard i < text.count, text[i] == 0x7B else { return nil }
        i += 1
        let wanted = Array("\"\(key)\"".utf8)
        while i < text.count {
            skipSpace()
            guard i < text.count, text[i] == 0x22 else { return nil }
            let keyStart = i
            guard skipString() else { return nil }
            let isWanted = text[keyStart..<i].elementsEqual(wanted)
            skipSpace()
            guard i < text.count, text[i] == 0x3A else { return nil }
            i += 1
            skipSpace()
            let valueStart = i
            guard skipValue() else { return nil }
            if isWanted { return text[valueStart..<i] }
            skipSpace()
            guard i < text.count else { return nil }
            if text[i] == 0x2C {
                i += 1
                continue
            }
            return nil
        }
        return nil
    }
}

/// Collateral fetched from a PCCS on first use, per FMSPC and PCK CA, kept
/// while valid and refreshed before it expires.
///
/// - A fetched document is accepted only if its signatures and chains
///   verify under the trust anchor (time aside): a tampered TCB info is a
///   failed fetch, never a quote failure, and the last good document stays.
/// - An entry is refreshed once `now` passes its refresh time (three
///   quarters of the way from its fetch to the earliest `nextUpdate` of its
///   TCB info, QE identity and CRLs, at most an hour before that).
/// - While the PCCS is down, a cached document still valid at `now` is
///   served; past its validity the platform is not ready.
/// - Concurrent requests for the same platform share one fetch, and a
///   failed fetch is not retried for ``retryInterval`` seconds, so under
///   load the PCCS sees at most one fetch per item per validity window.
public final class PCCSCollateralCache: Sendable {
    /// Fetches a platform's collateral (``PCCSClient/fetch(fmspc:ca:)``, or a stand-in).
    public typealias Fetch = @Sendable (_ fmspc: String, _ ca: String) async throws(AttestationError) -> Collateral

    struct Entry: Sendable {
        let collateral: Collateral
        let validUntil: Int64
        let refreshAt: Int64
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var inFlight: [String: Task<Result<Entry, AttestationError>, Never>] = [:]
        var failedAt: [String: (Int64, AttestationError)] = [:]
        var fetches = 0
        var failures = 0
    }

    private let fetch: Fetch
    private let verifier: QuoteVerifier
    private let state = Mutex(State())
    /// Seconds before a failed fetch is tried again.
    public let retryInterval: Int64

    /// A cache over `fetch`, accepting documents that verify under `verifier`'s trust anchor.
    public init(verifier: QuoteVerifier, retryInterval: Int64 = 5, fetch: @escaping Fetch) {
        self.verifier = verifier
        self.retryInterval = retryInterval
        self.fetch = fetch
    }

    /// A cache over a ``PCCSClient`` for `url`.
    public convenience init(url: String, verifier: QuoteVerifier) {
        let client = PCCSClient(url: url)
        self.init(verifier: verifier) { fmspc, ca throws(AttestationError) in
            try await client.fetch(fmspc: fmspc, ca: ca)
        }
    }

    /// Fetches so far (successful or not), and failed ones.
    public var counts: (fetches: Int, failures: Int) { state.withLock { ($0.fetches, $0.failures) } }

    /// The FMSPC (upper-case hex) and PCK CA (`platform` or `processor`) of a quote's PCK chain.
    public static func platform(of quote: Quote) throws(AttestationError) -> (fmspc: String, ca: String) {
        let fmspc = try quote.unverifiedPCKExtensions().fmspc.hexString.uppercased()
        let issuer = try quote.pckCertificates().first.map { String(describing: $0.issuer) } ?? ""
        return (fmspc, issuer.lowercased().contains("processor") ? "processor" : "platform")
    }

    /// The collateral cached for `quote`'s platform, if any is valid at `now` (no fetch).
    public func cached(for quote: Quote, now: Int64) -> Collateral? {
        guard let (fmspc, ca) = try? Self.platform(of: quote) else { return nil }
        return state.withLock { state in
            state.entries[fmspc + "/" + ca].flatMap { now <= $0.validUntil ? $0.collateral : nil }
        }
    }

    /// The collateral for `quote`'s platform at `now`: from the cache, or
    /// fetched (first use, refresh); the cached document while the PCCS is
    /// down and it is still valid.
    /// - Throws: ``AttestationError`` ``AttestationError/Code/collateralUnavailable``
    ///   when there is no valid collateral for the platform.
    public func collateral(for quote: Quote, now: Int64) async throws(AttestationError) -> Collateral {
        let (fmspc, ca) = try Self.platform(of: quote)
        let key = fmspc + "/" + ca
        enum Step {
            case ready(Collateral)
            case wait(Task<Result<Entry, AttestationError>, Never>)
            case failed(AttestationError)
        }
        let step: Step = state.withLock { state in
            let entry = state.entries[key]
            if let entry, now < entry.refreshAt { return .ready(entry.collateral) }
            if let task = state.inFlight[key] {
                if let entry, now <= entry.validUntil { return .ready(entry.collateral) }
                return .wait(task)
            }
            if let (at, error) = state.failedAt[key], now < at + retryInterval {
                if let entry, now <= entry.validUntil { return .ready(entry.collateral) }
                return .failed(error)
            }
            state.fetches += 1
            let task = Task { [fetch, verifier] () -> Result<Entry, AttestationError> in
                do throws(AttestationError) {
                    let collateral = try await fetch(fmspc, ca)
                    try verifier.checkCollateral(collateral)
                    let validUntil = try collateral.validUntil()
                    let margin = min(3_600, max(0, (validUntil - now) / 4))
                    return .success(
                        Entry(collateral: collateral, validUntil: validUntil, refreshAt: validUntil - margin))
                } catch {
                    return .failure(error)
                }
            }
            state.inFlight[key] = task
            if let entry, now <= entry.validUntil {
                // Refresh in the background; serve what is cached meanwhile.
                Task { _ = await self.finish(key, task, now: now) }
                return .ready(entry.collateral)
            }
            return .wait(task)
        }
        switch step {
        case .ready(let collateral): return collateral
        case .failed(let error): throw error
        case .wait(let task):
            switch await finish(key, task, now: now) {
            case .success(let collateral): return collateral
            case .failure(let error): throw error
            }
        }
    }

    private func finish(_ key: String, _ task: Task<Result<Entry, AttestationError>, Never>, now: Int64) async
        -> Result<Collateral, AttestationError>
    {
        let result = await task.value
        return state.withLock { state in
            if state.inFlight[key] == task {
                state.inFlight[key] = nil
                switch result {
                case .success(let entry):
                    state.entries[key] = entry
                    state.failedAt[key] = nil
                case .failure(let error):
                    state.failures += 1
                    state.failedAt[key] = (now, error)
                }
            }
            switch result {
            case .success(let entry): return .success(entry.collateral)
            case .failure(let error):
                if let entry = state.entries[key], now <= entry.validUntil { return .success(entry.collateral) }
                return .failure(
                    AttestationError(
                        .collateralUnavailable, step: error.step,
                        "no valid collateral for \(key) and the PCCS fetch failed: \(error.reason)"))
            }
        }
    }

    /// Why some cached platform has no valid collateral at `now` (its
    /// document expired and could not be refreshed), or nil.
    public func notReadyReason(now: Int64) -> String? {
        state.withLock { state in
            for (key, entry) in state.entries.sorted(by: { $0.key < $1.key }) where now > entry.validUntil {
                let why = state.failedAt[key].map { ": \($0.1.reason)" } ?? ""
                return
                    "the collateral for \(key) expired at \(formatISO8601(entry.validUntil)) and was not refreshed\(why)"
            }
            return nil
        }
    }
}

extension Collateral {
    /// The earliest `nextUpdate` of the TCB info, the QE identity and the two CRLs, Unix seconds.
    public func validUntil() throws(AttestationError) -> Int64 {
        let d = decoded
        return min(
            try d.tcbInfo.get().nextUpdate, try d.qeIdentity.get().nextUpdate, try d.rootCACRL.get().nextUpdate,
            try d.pckCRL.get().nextUpdate)
    }
}

extension QuoteVerifier {
    /// Checks `collateral`'s signatures and chains under the trust anchor,
    /// time aside (what a verification would check first), and caches the result.
    /// - Throws: ``AttestationError`` naming the failing step.
    public func checkCollateral(_ collateral: Collateral) throws(AttestationError) {
        let key = Digest(parts: [collateral.digest.bytes[...], trustAnchor.digest[...]])
        if cache.collateral(key) != nil { return }
        let verified = try VerifiedCollateral.verify(collateral, key: key, anchor: trustAnchor, cache: cache)
        cache.store(verified, for: key)
    }
}
