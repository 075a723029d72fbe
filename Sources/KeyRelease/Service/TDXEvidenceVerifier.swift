import Attestation
import Crypto
import Foundation
import Synchronization

/// The production quote checks: TDX quote parsing and DCAP verification from
/// the `Attestation` module, with collateral from `COLLATERAL_DIR` (reloaded
/// on demand) or fetched from a PCCS (`PCCS_URL`) and verified results
/// cached by the verifier.
public struct TDXEvidenceVerifier: EvidenceVerifier {
    public typealias Parsed = Quote

    let verifier: QuoteVerifier
    let directory: CollateralDirectoryHolder?
    /// Whether collateral comes from a directory (reloaded on SIGHUP and on change), not a PCCS.
    package var readsCollateralDirectory: Bool { directory != nil }
    let pccs: PCCSCollateralCache?
    /// Which collateral a PCK chain needs, by the chain's SHA-256: finding
    /// the FMSPC means decoding the PCK certificate, which a platform seen
    /// before should not pay again. The table is emptied when it grows past
    /// 4,096 and when the directory is reloaded.
    private let collateralByChain = CollateralLookupCache()

    /// A verifier under `trustAnchor` with the collateral of `collateralDirectory`,
    /// or fetched from the PCCS at `pccsURL`.
    public init(trustAnchor: TrustAnchor = .intelSGXRootCA, collateralDirectory: URL?, pccsURL: String? = nil) {
        verifier = QuoteVerifier(trustAnchor: trustAnchor)
        directory = pccsURL == nil ? CollateralDirectoryHolder(url: collateralDirectory) : nil
        pccs = pccsURL.map { PCCSCollateralCache(url: $0, verifier: QuoteVerifier(trustAnchor: trustAnchor)) }
    }

    /// Files of the collateral directory that were skipped, with the reason
    /// (logged as warnings at start-up and on reload).
    public var skippedCollateralFiles: [(file: String, reason: String)] { directory?.skipped ?? [] }

    public func parse(quote: [UInt8]) throws(EvidenceFailure) -> Quote {
        do {
            return try Quote(bytes: quote)
        } catch {
            throw EvidenceFailure(.malformed, error.description)
        }
    }

    public func reportData(of quote: Quote) -> [UInt8] { Array(quote.report.reportData) }

    private func collateral(for quote: Quote, now: Int64) throws(AttestationError) -> Collateral {
        if let pccs {
            guard let cached = pccs.cached(for: quote, now: now) else {
                throw AttestationError(.collateralUnavailable, step: .parseCollateral, "no collateral fetched yet")
            }
            return cached
        }
        guard let directory else {
            throw AttestationError(.collateralUnavailable, step: .parseCollateral, "no COLLATERAL_DIR configured")
        }
        let loaded: CollateralDirectory
        switch directory.current {
        case .success(let value): loaded = value
        case .failure(let failure):
            throw AttestationError(.collateralUnavailable, step: .parseCollateral, failure.reason)
        }
        let chainDigest = Array(SHA256.hash(data: quote.signatureData.pckChainPEM))
        if let known = collateralByChain.lookup(chainDigest, generation: directory.generation) { return known }
        let found = try loaded.collateral(for: quote)
        collateralByChain.store(found, for: chainDigest, generation: directory.generation)
        return found
    }

    public func verify(_ quote: Quote, now: Date) throws(EvidenceFailure) -> MeasuredState {
        do {
            let instant = Int64(now.timeIntervalSince1970)
            let verified = try verifier.verify(
                quote: quote, collateral: try collateral(for: quote, now: instant), now: instant)
            return MeasuredState(
                mrtd: Array(verified.report.mrTD),
                rtmrs: verified.report.rtmrs.map(Array.init),
                tcbStatus: verified.status.rawValue
            )
        } catch {
            throw EvidenceFailure(.unverified, error.description)
        }
    }

    /// Missing or expired collateral for the quote's platform; a quote that
    /// does not parse is left to the verification steps.
    public func prepare(quote bytes: [UInt8], now: Date) async -> String? {
        guard let quote = try? Quote(bytes: bytes) else { return nil }
        let instant = Int64(now.timeIntervalSince1970)
        do throws(AttestationError) {
            let found: Collateral
            if let pccs {
                found = try await pccs.collateral(for: quote, now: instant)
            } else {
                found = try collateral(for: quote, now: instant)
            }
            let validUntil = try found.validUntil()
            if instant > validUntil {
                return
                    "the collateral for FMSPC \((try? found.fmspc()) ?? "?") expired at \(Date(timeIntervalSince1970: TimeInterval(validUntil)))"
            }
            return nil
        } catch {
            // A PCK chain that does not decode is the quote's problem.
            if error.step == .pckChain { return nil }
            return error.reason
        }
    }

    public func notReadyReason(now date: Date) -> String? {
        let now = Int64(date.timeIntervalSince1970)
        if let pccs { return pccs.notReadyReason(now: now) }
        guard let directory else { return "no COLLATERAL_DIR configured" }
        switch directory.current {
        case .failure(let failure): return failure.reason
        case .success(let loaded):
            let expired = loaded.byFMSPC.filter { (try? $0.value.validUntil()).map { now > $0 } ?? true }
            if !expired.isEmpty, expired.count == loaded.byFMSPC.count {
                return
                    "every collateral document in COLLATERAL_DIR has expired (\(expired.keys.sorted().joined(separator: ", ")))"
            }
            return nil
        }
    }

    public func pccsCounts() -> (fetches: Int, failures: Int)? {
        guard let pccs else { return nil }
        let counts = pccs.counts
        return (counts.fetches, counts.failures)
    }

    /// Reloads `COLLATERAL_DIR` (SIGHUP); nil without one.
    public func reloadCollateral() -> Result<Void, EvidenceFailure>? { directory?.reload() }

    /// Reloads `COLLATERAL_DIR` if a file in it changed; nil if nothing changed.
    public func reloadCollateralIfChanged() -> Result<Void, EvidenceFailure>? { directory?.reloadIfChanged() }
}

/// `COLLATERAL_DIR`, loaded at start and again on demand. A reload that
/// fails (or finds no document) keeps the last good collateral.
final class CollateralDirectoryHolder: Sendable {
    private struct State {
        var current: Result<CollateralDirectory, EvidenceFailure>
        var signature: [String]
        var generation = 0
    }
    let url: URL?
    private let state: Mutex<State>

    init(url: URL?) {
        self.url = url
        state = Mutex(
            State(current: .failure(EvidenceFailure(.collateral, "no COLLATERAL_DIR configured")), signature: []))
        _ = reload()
    }

    var current: Result<CollateralDirectory, EvidenceFailure> { state.withLock { $0.current } }
    var generation: Int { state.withLock { $0.generation } }
    var skipped: [(file: String, reason: String)] { (try? current.get().skipped) ?? [] }

    /// Names, sizes and modification times of the directory's files.
    private func signature() -> [String] {
        guard let url, let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else { return [] }
        return names.sorted().map { name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: url.appendingPathComponent(name).path)
            let date = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(name) \(attributes?[.size] ?? 0) \(date)"
        }
    }

    func reload() -> Result<Void, EvidenceFailure> {
        guard let url else { return .failure(EvidenceFailure(.collateral, "no COLLATERAL_DIR configured")) }
        let signature = signature()
        let loaded: Result<CollateralDirectory, EvidenceFailure>
        do {
            let directory = try CollateralDirectory(directory: url)
            loaded =
                directory.byFMSPC.isEmpty
                ? .failure(EvidenceFailure(.collateral, "no collateral document in \(url.path)")) : .success(directory)
        } catch {
            loaded = .failure(EvidenceFailure(.collateral, error.reason))
        }
        return state.withLock { state in
            state.signature = signature
            switch (loaded, state.current) {
            case (.success, _), (.failure, .failure):
                state.current = loaded
                state.generation += 1
            case (.failure, .success): break
            }
            return loaded.map { _ in () }
        }
    }

    func reloadIfChanged() -> Result<Void, EvidenceFailure>? {
        let now = signature()
        guard state.withLock({ $0.signature != now }) else { return nil }
        return reload()
    }
}

/// A bounded map from PCK chain digests to collateral.
final class CollateralLookupCache: Sendable {
    private let table = Mutex((generation: 0, entries: [[UInt8]: Collateral]()))

    func lookup(_ digest: [UInt8], generation: Int) -> Collateral? {
        table.withLock { $0.generation == generation ? $0.entries[digest] : nil }
    }

    func store(_ collateral: Collateral, for digest: [UInt8], generation: Int) {
        table.withLock { table in
            if table.entries.count >= 4096 || table.generation != generation { table = (generation, [:]) }
            table.entries[digest] = collateral
        }
    }
}
