import Foundation
import KeyrackCore
import SecretSharing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// A node's durable state: the trust-quorum ``PersistentState`` sealed by the
/// node's root of trust and written, generation after generation, to two
/// directories.
///
/// A write goes to a temporary file in each directory, is fsynced, renamed
/// over `ledger`, and the directory is fsynced, so a crash leaves either the
/// old or the new generation in each place, never a torn file. At load both
/// copies are opened; the highest valid generation wins, and a copy that is
/// corrupt, truncated or sealed by another root of trust is reported and the
/// other used. The root of trust keeps the highest generation written
/// (``RootOfTrust/ledgerMarker()``), so an older ledger, or none, is
/// refused at load.
///
/// File format: `KRLG` ‖ version (1 byte, 1) ‖ generation (8 bytes, big
/// endian) ‖ ChaCha20-Poly1305 sealed box (12-byte nonce ‖ ciphertext ‖
/// 16-byte tag) of the JSON-encoded state, with the first 13 bytes as
/// authenticated data. The root of trust seals and opens the box
/// (``RootOfTrust/seal(_:purpose:authenticating:)``, purpose
/// `keyrack-ledger-v1`), so the key never leaves it. The whole state is
/// encrypted, shares included, so the files alone reveal no share.
public struct Ledger: Sendable {
    /// The two directories.
    public let directories: [URL]
    let rootOfTrust: any RootOfTrust

    static let purpose = "keyrack-ledger-v1"

    static let magic = Array("KRLG".utf8)
    static let version: UInt8 = 1
    static let fileName = "ledger"

    /// A ledger in `directories` (two, on different disks in production)
    /// sealed by `rootOfTrust`.
    public init(directories: [URL], rootOfTrust: any RootOfTrust) throws(LedgerError) {
        guard directories.count == 2, directories[0].standardizedFileURL != directories[1].standardizedFileURL else {
            throw LedgerError(.directories, "a ledger needs two different directories")
        }
        for directory in directories {
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            } catch {
                throw LedgerError(.io, "cannot create the ledger directory \(directory.path)")
            }
        }
        self.directories = directories
        self.rootOfTrust = rootOfTrust
    }

    /// What loading found.
    public struct Loaded: Sendable {
        /// The state of the highest valid generation, or nil if no copy exists.
        public let state: PersistentState?
        /// That generation (0 when nothing was found).
        public let generation: UInt64
        /// Copies that exist but could not be used, with the reason.
        public let problems: [(path: String, reason: String)]
    }

    /// Opens both copies and returns the newest valid state. Throws only when
    /// copies exist and none of them can be opened (nothing is silently lost),
    /// and when the root of trust's ledger marker says the ledger was rolled
    /// back or is gone (review L3):
    /// - the newest copy is of a generation below the marker: the ledger was
    ///   restored from an older copy (``LedgerErrorCode/rollback``);
    /// - no copy exists but the marker says this node has written one: the
    ///   node was initialised and its ledger was deleted or is not mounted
    ///   (``LedgerErrorCode/missing``). With `reinitialise` it starts as a
    ///   new node, its generations going on above the marker;
    /// - `reinitialise` while a copy exists (``LedgerErrorCode/reinitialise``):
    ///   nothing is thrown away on a flag; move the copies aside first.
    ///
    /// A ledger written before markers existed sets the marker to its
    /// generation here.
    public func load(reinitialise: Bool = false) throws(LedgerError) -> Loaded {
        let marker: UInt64?
        do {
            marker = try rootOfTrust.ledgerMarker()
        } catch {
            throw LedgerError(.marker, error.reason)
        }
        let copies = readCopies(of: Self.fileName, in: directories) { bytes throws(CopyRefused) in
            do throws(LedgerError) {
                let (generation, state) = try self.open(bytes)
                return (generation, state)
            } catch {
                throw CopyRefused(reason: error.reason)
            }
        }
        var problems = copies.problems
        let paths = directories.map { $0.appendingPathComponent(Self.fileName).path }.joined(separator: " and ")
        if copies.existing == 0 {
            guard let marker else { return Loaded(state: nil, generation: 0, problems: []) }
            guard reinitialise else {
                throw LedgerError(
                    .missing,
                    "this node was initialised (its root of trust has recorded ledger generation \(marker)), but no "
                        + "ledger copy exists at \(paths); it does not start as a new node on its own. Mount or "
                        + "restore the ledger directories, or, if the ledger is lost for good, start it once with "
                        + "`keyrack node run --reinitialise` (it starts with no share and gets one at the operator's next "
                        + "commit, `keyrack rack rotate`)")
            }
            return Loaded(
                state: nil, generation: marker,
                problems: [(paths, "the ledger was reinitialised (--reinitialise)")])
        }
        if reinitialise {
            throw LedgerError(
                .reinitialise,
                "--reinitialise starts a node whose ledger is gone, but \(copies.existing == 2 ? "both copies exist" : "a copy exists") "
                    + "(\(paths)); nothing is deleted on a flag: move them aside first")
        }
        guard let newest = copies.newest else {
            throw LedgerError(
                .unusable,
                "no ledger copy can be opened: " + problems.map { "\($0.path): \($0.reason)" }.joined(separator: "; ")
            )
        }
        if let marker, newest.generation < marker {
            throw LedgerError(
                .rollback,
                "the newest ledger copy is generation \(newest.generation), but this node's root of trust has "
                    + "recorded generation \(marker): the ledger was rolled back (restored from an older copy). "
                    + "Restore the current copies; if they are lost, move these aside and start with "
                    + "`keyrack node run --reinitialise`")
        }
        if marker == nil {
            do {
                try rootOfTrust.advanceLedgerMarker(to: newest.generation)
            } catch {
                throw LedgerError(.marker, error.reason)
            }
        }
        // One copy present and the other gone: the disk that held it was
        // replaced, wiped or not mounted. Say so; the next write restores it.
        problems += copies.missing.map { ($0, "missing while the other copy exists") }
        return Loaded(state: newest.value, generation: newest.generation, problems: problems)
    }

    /// Seals `state` as `generation` and writes it to both directories
    /// (atomically in each), then raises the root of trust's ledger marker
    /// to `generation` — after both copies, so a crash in between leaves
    /// copies newer than the marker, never older. Call before sending any
    /// message that depends on it.
    public func write(_ state: PersistentState, generation: UInt64) throws(LedgerError) {
        let sealed = try seal(state, generation: generation)
        for directory in directories {
            try Self.atomicWrite(sealed, to: directory)
        }
        do {
            try rootOfTrust.advanceLedgerMarker(to: generation)
        } catch {
            throw LedgerError(.marker, "the ledger is written, but \(error.reason)")
        }
    }

    func seal(_ state: PersistentState, generation: UInt64) throws(LedgerError) -> [UInt8] {
        let header = Self.magic + [Self.version] + generation.bigEndianBytes
        do {
            var encoded = try JSONEncoder().encode(state)
            var plaintext = Array(encoded)
            defer {
                encoded.withUnsafeMutableBytes { secureZero($0) }
                plaintext.withUnsafeMutableBytes { secureZero($0) }
            }
            return header + (try rootOfTrust.seal(plaintext, purpose: Self.purpose, authenticating: header))
        } catch {
            throw LedgerError(.seal, "cannot seal the state")
        }
    }

    func open(_ bytes: [UInt8]) throws(LedgerError) -> (UInt64, PersistentState) {
        guard bytes.count >= 13 + 12 + 16 else { throw LedgerError(.format, "truncated (\(bytes.count) bytes)") }
        guard Array(bytes.prefix(4)) == Self.magic else { throw LedgerError(.format, "not a keyrack ledger") }
        guard bytes[4] == Self.version else { throw LedgerError(.version, "unsupported ledger version \(bytes[4])") }
        let generation = UInt64(bigEndianBytes: bytes[5..<13])
        let plaintext: SecretBytes
        do {
            plaintext = try rootOfTrust.open(
                Array(bytes[13...]), purpose: Self.purpose, authenticating: Array(bytes[0..<13]))
        } catch {
            throw LedgerError(.corrupt, "does not open: corrupt, truncated, or sealed by another node's root of trust")
        }
        do {
            // Decoded in place: the plaintext is not copied out of its zeroizing storage.
            let state = try plaintext.withUnsafeBytes { bytes in
                guard let base = bytes.baseAddress else { throw LedgerError(.corrupt, "empty") }
                let view = Data(
                    bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
                return try JSONDecoder().decode(PersistentState.self, from: view)
            }
            return (generation, state)
        } catch {
            throw LedgerError(.corrupt, "opens but does not decode as trust-quorum state")
        }
    }

    static func atomicWrite(_ bytes: [UInt8], to directory: URL) throws(LedgerError) {
        do {
            try writeAtomically(bytes, to: directory, name: fileName)
        } catch {
            throw LedgerError(.io, error.reason)
        }
    }
}

/// A ledger that could not be written or opened.
public typealias LedgerError = CodedError<LedgerErrorCode>

/// The codes of ``LedgerError``.
public struct LedgerErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The ledger was not given two different directories.
    public static let directories = LedgerErrorCode("NODE-LEDGER-DIRECTORIES")
    /// A directory cannot be created, or a copy cannot be written to it.
    public static let io = LedgerErrorCode("NODE-LEDGER-IO")
    /// The root of trust cannot seal the state.
    public static let seal = LedgerErrorCode("NODE-LEDGER-SEAL")
    /// A copy is truncated or is not a keyrack ledger.
    public static let format = LedgerErrorCode("NODE-LEDGER-FORMAT")
    /// A copy is of a ledger version this node does not read.
    public static let version = LedgerErrorCode("NODE-LEDGER-VERSION")
    /// A copy does not open (corrupt, or sealed by another node's root of
    /// trust) or does not decode as trust-quorum state.
    public static let corrupt = LedgerErrorCode("NODE-LEDGER-CORRUPT")
    /// Copies exist and none of them can be used.
    public static let unusable = LedgerErrorCode("NODE-LEDGER-UNUSABLE")
    /// The newest copy is older than the root of trust's ledger marker: the ledger was rolled back.
    public static let rollback = LedgerErrorCode("NODE-LEDGER-ROLLBACK")
    /// No copy exists, but the root of trust's marker says this node wrote one.
    public static let missing = LedgerErrorCode("NODE-LEDGER-MISSING")
    /// `--reinitialise` was given while a ledger copy exists.
    public static let reinitialise = LedgerErrorCode("NODE-LEDGER-REINITIALISE")
    /// The root of trust's ledger marker cannot be read, authenticated or raised.
    public static let marker = LedgerErrorCode("NODE-LEDGER-MARKER")
}
