import Crypto
import Synchronization
import X509

/// Verified intermediate results, keyed by the SHA-256 of what was verified.
///
/// A service that sees the same platform again only checks what is new: the
/// collateral (CRLs, TCB info, QE identity and their chains) is verified once
/// per content and trust anchor, a PCK chain once per chain bytes, collateral
/// and anchor, and a signature once per (key, message, signature). Nothing
/// time-dependent is cached: validity windows are stored with the results
/// and checked against `now` on every verification. Only successes are
/// stored. Each table holds at most ``capacity`` entries and is emptied when
/// full, so memory stays bounded whatever clients send.
///
/// Safe to share between threads.
public final class VerificationCache: Sendable {
    /// Most entries per table.
    public let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var collateral: [Digest: VerifiedCollateral] = [:]
        var chains: [Digest: VerifiedChain] = [:]
        var signatures: Set<Digest> = []
        var hits = 0
        var misses = 0
    }

    /// Creates an empty cache.
    public init(capacity: Int = 4096) { self.capacity = max(1, capacity) }

    /// Number of lookups answered from the cache, and not.
    public var statistics: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }

    /// Number of stored results of each kind.
    public var counts: (collateral: Int, chains: Int, signatures: Int) {
        state.withLock { ($0.collateral.count, $0.chains.count, $0.signatures.count) }
    }

    /// Forgets everything.
    public func removeAll() {
        state.withLock { $0 = State() }
    }

    func collateral(_ key: Digest) -> VerifiedCollateral? {
        state.withLock { s in
            let value = s.collateral[key]
            if value != nil { s.hits += 1 } else { s.misses += 1 }
            return value
        }
    }

    func store(_ value: VerifiedCollateral, for key: Digest) {
        state.withLock { s in
            if s.collateral.count >= capacity { s.collateral.removeAll() }
            s.collateral[key] = value
        }
    }

    func chain(_ key: Digest) -> VerifiedChain? {
        state.withLock { s in
            let value = s.chains[key]
            if value != nil { s.hits += 1 } else { s.misses += 1 }
            return value
        }
    }

    func store(_ value: VerifiedChain, for key: Digest) {
        state.withLock { s in
            if s.chains.count >= capacity { s.chains.removeAll() }
            s.chains[key] = value
        }
    }

    /// Whether `signature` over `message` by `key` verifies, remembering
    /// successes. `keyID` must identify `key` (the SHA-256 of the
    /// certificate that holds it), so that no serialization of the key is
    /// needed per call.
    func isValid(
        signature: P256.Signing.ECDSASignature, digest message: SHA256Digest, key: P256.Signing.PublicKey,
        keyID: Digest
    ) -> Bool {
        var hasher = SHA256()
        hasher.update(data: keyID.bytes)
        hasher.update(data: Array(message))
        hasher.update(data: signature.rawRepresentation)
        let entry = Digest(hasher.finalize())
        let known = state.withLock { s in
            let hit = s.signatures.contains(entry)
            if hit { s.hits += 1 } else { s.misses += 1 }
            return hit
        }
        if known { return true }
        guard key.isValidSignature(signature, for: message) else { return false }
        state.withLock { s in
            if s.signatures.count >= capacity { s.signatures.removeAll() }
            s.signatures.insert(entry)
        }
        return true
    }
}

/// A SHA-256 value as four words, cheap to hash and compare.
struct Digest: Hashable, Sendable {
    let a: UInt64
    let b: UInt64
    let c: UInt64
    let d: UInt64

    init(_ digest: SHA256Digest) {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        digest.withUnsafeBytes { raw in
            words = (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            )
        }
        (a, b, c, d) = words
    }

    /// SHA-256 over the given parts, each prefixed by its length.
    init(parts: [ArraySlice<UInt8>]) {
        var hasher = SHA256()
        for part in parts {
            var length = UInt64(part.count).littleEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            part.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        }
        self.init(hasher.finalize())
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        for word in [a, b, c, d] { withUnsafeBytes(of: word) { out.append(contentsOf: $0) } }
        return out
    }
}
