import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import SwiftASN1
import Synchronization
import X509
import _CryptoExtras

#if canImport(Glibc)
    import Glibc
#endif

/// What a node's root of trust does. Every operation that needs the device
/// key or a sealing key happens inside it, and no private or sealing key
/// material ever comes out: it signs (TLS handshakes, the CSR, measurement
/// evidence), and it seals and opens the node's data at rest.
/// ``SoftwareRootOfTrust`` keeps the key in a file; a TPM or a hardware root
/// of trust can take its place behind this protocol.
///
/// Operations may block (a TPM answers in milliseconds to seconds): the TLS
/// handshake calls ``sign(_:scheme:)`` off the event loop.
public protocol RootOfTrust: Sendable {
    /// The device's public key (the one its certificate certifies).
    var publicKey: Certificate.PublicKey { get }
    /// The schemes ``sign(_:scheme:)`` supports, preferred first: `ed25519`
    /// for an Ed25519 key; the RSA-PSS schemes and `rsaPkcs1Sha256` (for the
    /// CSR only) for an RSA key.
    var signatureSchemes: [DeviceSignatureScheme] { get }
    /// Signs `message` with the device key under `scheme`. `message` is
    /// never a digest: Ed25519 signs it whole, the RSA schemes hash it with
    /// the scheme's hash (RSA-PSS with MGF1 of the same hash and a salt as
    /// long as the digest, as TLS 1.3 requires). A scheme not in
    /// ``signatureSchemes`` is an error.
    func sign(_ message: [UInt8], scheme: DeviceSignatureScheme) throws(RootOfTrustError) -> [UInt8]
    /// Seals `plaintext` for `purpose` with an AEAD under a key that never
    /// leaves the root of trust (another root of trust, or another purpose,
    /// has another key), authenticating `authenticatedData` too. Returns
    /// the sealed box: nonce ‖ ciphertext ‖ tag.
    func seal(_ plaintext: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> [UInt8]
    /// Opens what ``seal(_:purpose:authenticating:)`` sealed for the same
    /// purpose and authenticated data; anything else (tampered, truncated,
    /// sealed by another root of trust or for another purpose) is an error.
    func open(_ sealed: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> SecretBytes
    /// The node's measurement evidence: a signature by the device key over
    /// `log` bound to `reportData` (what a peer's attestation asks for). A
    /// TPM would answer with a quote over its PCRs instead.
    func signMeasurements(_ log: MeasurementLog, reportData: [UInt8]) throws(RootOfTrustError) -> [UInt8]
    /// The ledger's anti-rollback marker (review L3): the highest ledger
    /// generation ever written under this root of trust, or nil if none
    /// was. Kept outside the ledger directories, by the root of trust (a TPM
    /// keeps it in an NV counter), so restoring an older ledger, or deleting
    /// both copies, is seen at the next start. A marker that exists but
    /// does not authenticate is an error, never "none".
    func ledgerMarker() throws(RootOfTrustError) -> UInt64?
    /// Raises the marker to `generation` (durably, before returning). It
    /// never goes down: a lower value is an error and changes nothing.
    func advanceLedgerMarker(to generation: UInt64) throws(RootOfTrustError)
}

/// A signature scheme of the device key, named by its TLS 1.3
/// SignatureScheme code point (RFC 8446 §4.2.3).
public enum DeviceSignatureScheme: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    /// RSASSA-PKCS1-v1_5 with SHA-256: for the CSR (swift-certificates
    /// signs X.509 with RSA this way); TLS 1.3 does not allow it.
    case rsaPkcs1Sha256 = 0x0401
    case rsaPssRsaeSha256 = 0x0804
    case rsaPssRsaeSha384 = 0x0805
    case rsaPssRsaeSha512 = 0x0806
    case ed25519 = 0x0807

    /// Whether a TLS 1.3 CertificateVerify may use it.
    public var allowedInTLS13: Bool { self != .rsaPkcs1Sha256 }

    public var description: String {
        switch self {
        case .rsaPkcs1Sha256: return "rsa_pkcs1_sha256"
        case .rsaPssRsaeSha256: return "rsa_pss_rsae_sha256"
        case .rsaPssRsaeSha384: return "rsa_pss_rsae_sha384"
        case .rsaPssRsaeSha512: return "rsa_pss_rsae_sha512"
        case .ed25519: return "ed25519"
        }
    }
}

extension RootOfTrust {
    /// The scheme of measurement evidence: Ed25519, or RSA-PSS SHA-256 for
    /// an RSA key (what the appraisal of software evidence verifies).
    var evidenceScheme: DeviceSignatureScheme {
        signatureSchemes.contains(.ed25519) ? .ed25519 : .rsaPssRsaeSha256
    }

    /// Signs `message` as measurement evidence is signed: Ed25519, or
    /// RSA-PSS SHA-256 for an RSA key.
    public func sign(_ message: [UInt8]) throws(RootOfTrustError) -> [UInt8] {
        try sign(message, scheme: evidenceScheme)
    }

    /// Signs the domain-separated encoding of the report data and the log
    /// (as evidence frames carry them) with ``sign(_:)``.
    public func signMeasurements(_ log: MeasurementLog, reportData: [UInt8]) throws(RootOfTrustError) -> [UInt8] {
        try sign(SoftwareEvidence.signedMessage(reportData: reportData, log: log))
    }

    /// ``seal(_:purpose:authenticating:)`` with no authenticated data.
    public func seal(_ plaintext: [UInt8], purpose: String) throws(RootOfTrustError) -> [UInt8] {
        try seal(plaintext, purpose: purpose, authenticating: [])
    }

    /// ``open(_:purpose:authenticating:)`` with no authenticated data.
    public func open(_ sealed: [UInt8], purpose: String) throws(RootOfTrustError) -> SecretBytes {
        try open(sealed, purpose: purpose, authenticating: [])
    }

    /// A swift-certificates signing key that signs through this root of
    /// trust (for the CSR): it holds no key material, and serialising it
    /// fails.
    public var certificateSigner: Certificate.PrivateKey { .init(RootOfTrustCertificateSigner(self)) }
}

/// A root of trust that failed or could not be opened.
public typealias RootOfTrustError = CodedError<RootOfTrustErrorCode>

/// The codes of ``RootOfTrustError``.
public struct RootOfTrustErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// There is no device key file (`keyrack device init` makes one).
    public static let missing = RootOfTrustErrorCode("NODE-ROT-MISSING")
    /// A device key file already exists where one was to be created: it is never overwritten.
    public static let exists = RootOfTrustErrorCode("NODE-ROT-EXISTS")
    /// The device key file cannot be created, opened, read or written.
    public static let io = RootOfTrustErrorCode("NODE-ROT-IO")
    /// The device key file is readable by others than its owner.
    public static let permissions = RootOfTrustErrorCode("NODE-ROT-PERMISSIONS")
    /// The device key is neither an Ed25519 seed nor an RSA private key.
    public static let format = RootOfTrustErrorCode("NODE-ROT-FORMAT")
    /// Generating a key, signing or sealing failed.
    public static let failed = RootOfTrustErrorCode("NODE-ROT-FAILED")
    /// The device key cannot do what was asked (a signature scheme it lacks, decryption).
    public static let unsupported = RootOfTrustErrorCode("NODE-ROT-UNSUPPORTED")
    /// The device key was asked to leave the root of trust: it never does.
    public static let export = RootOfTrustErrorCode("NODE-ROT-EXPORT")
    /// Sealed data does not open: corrupt, truncated, or sealed by another root of trust or for another purpose.
    public static let open = RootOfTrustErrorCode("NODE-ROT-OPEN")
    /// The ledger marker is corrupt or was written by another root of trust, or was asked to go down.
    public static let marker = RootOfTrustErrorCode("NODE-ROT-MARKER")
}

/// The kinds of device key.
public enum DeviceKeyType: String, Sendable, CaseIterable {
    /// Ed25519 (the default).
    case ed25519
    /// RSA-4096, as the manufacturing flow of the seed document uses.
    case rsa4096
}

/// The software root of trust: the device key in a file of mode 0600 —
/// 32 raw bytes for an Ed25519 seed, PEM for RSA — never exported. Sealing
/// keys are derived from the key file with HKDF-SHA256 (salt
/// `keyrack-rot-v1`, info the purpose) and used with ChaCha20-Poly1305 inside
/// it.
///
/// Its ledger marker is the file `KEYFILE.marker` beside the key file
/// (``LedgerMarkerFile``); a root of trust made from a seed (tests) keeps it
/// in memory. Whoever can write the key file's directory can delete the
/// marker too: the software root of trust stops a rollback of the ledger
/// directories (the data disks), not of the disk that holds the key — a TPM
/// does that.
public struct SoftwareRootOfTrust: RootOfTrust, CustomStringConvertible, CustomDebugStringConvertible {
    private enum Key: Sendable {
        case ed25519(Curve25519.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
    }

    private let key: Key
    /// The key material the sealing keys are derived from.
    private let material: SecretBytes
    /// Where the ledger marker is kept.
    private let marker: LedgerMarkerStore

    /// Creates a new device key at `path` (never overwriting one).
    public static func create(keyFile path: String, type: DeviceKeyType = .ed25519) throws(RootOfTrustError)
        -> SoftwareRootOfTrust
    {
        let bytes: SecretBytes
        switch type {
        case .ed25519:
            var random = SystemRandomSource()
            bytes = random.secretBytes(32)
        case .rsa4096:
            do {
                bytes = SecretBytes(Array(try _RSA.Signing.PrivateKey(keySize: .bits4096).pemRepresentation.utf8))
            } catch {
                throw RootOfTrustError(.failed, "cannot generate an RSA-4096 key")
            }
        }
        let descriptor = openFile(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw errno == EEXIST
                ? RootOfTrustError(.exists, "\(path) already exists; refusing to overwrite a device key")
                : RootOfTrustError(.io, "cannot create \(path): errno \(errno)")
        }
        defer { close(descriptor) }
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            unlink(path)
            throw RootOfTrustError(.io, "cannot write \(path)")
        }
        return try SoftwareRootOfTrust(material: bytes, marker: .file(LedgerMarkerFile.path(forKeyFile: path)))
    }

    /// Opens the device key at `path`.
    public init(keyFile path: String) throws(RootOfTrustError) {
        let descriptor = openFile(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw errno == ENOENT
                ? RootOfTrustError(.missing, "no device key at \(path): run `keyrack device init`")
                : RootOfTrustError(.io, "cannot open \(path): errno \(errno)")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & 0o077 == 0 else {
            throw RootOfTrustError(
                .permissions, "the device key \(path) must be readable by its owner only (chmod 600)")
        }
        let size = Int(status.st_size)
        guard size > 0, size <= 16_384 else { throw RootOfTrustError(.format, "\(path) is not a device key") }
        var ok = false
        let bytes = SecretBytes(count: size) { ok = read(descriptor, $0.baseAddress, size) == size }
        guard ok else { throw RootOfTrustError(.io, "cannot read \(path)") }
        try self.init(material: bytes, marker: .file(LedgerMarkerFile.path(forKeyFile: path)))
    }

    /// A root of trust over an Ed25519 seed (tests): its ledger marker is
    /// kept in memory, or in `markerFile` if given.
    public init(seed: SecretBytes, markerFile: String? = nil) throws(RootOfTrustError) {
        guard seed.count == 32 else { throw RootOfTrustError(.format, "a device seed is 32 bytes") }
        try self.init(material: seed, marker: markerFile.map { .file($0) } ?? .memory(MemoryLedgerMarker()))
    }

    private init(material: SecretBytes, marker: LedgerMarkerStore) throws(RootOfTrustError) {
        if material.count == 32 {
            guard let key = material.withUnsafeBytes({ try? Curve25519.Signing.PrivateKey(rawRepresentation: $0) })
            else {
                throw RootOfTrustError(.format, "the Ed25519 device seed is invalid")
            }
            self.key = .ed25519(key)
        } else {
            let pem = material.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            guard let key = try? _RSA.Signing.PrivateKey(pemRepresentation: pem), key.keySizeInBits >= 2048 else {
                throw RootOfTrustError(
                    .format, "the device key is neither an Ed25519 seed nor an RSA private key in PEM")
            }
            self.key = .rsa(key)
        }
        self.material = material
        self.marker = marker
    }

    /// The key type only; the key is never printed.
    public var description: String {
        switch key {
        case .ed25519: return "SoftwareRootOfTrust(Ed25519, key redacted)"
        case .rsa: return "SoftwareRootOfTrust(RSA, key redacted)"
        }
    }
    public var debugDescription: String { description }

    public var publicKey: Certificate.PublicKey {
        switch key {
        case .ed25519(let key): return .init(key.publicKey)
        case .rsa(let key): return .init(key.publicKey)
        }
    }

    public var signatureSchemes: [DeviceSignatureScheme] {
        switch key {
        case .ed25519: return [.ed25519]
        case .rsa: return [.rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512, .rsaPkcs1Sha256]
        }
    }

    public func sign(_ message: [UInt8], scheme: DeviceSignatureScheme) throws(RootOfTrustError) -> [UInt8] {
        let signature: [UInt8]?
        do {
            switch (key, scheme) {
            case (.ed25519(let key), .ed25519):
                signature = Array(try key.signature(for: message))
            case (.rsa(let key), .rsaPssRsaeSha256):
                signature = Array(try key.signature(for: SHA256.hash(data: message), padding: .PSS).rawRepresentation)
            case (.rsa(let key), .rsaPssRsaeSha384):
                signature = Array(try key.signature(for: SHA384.hash(data: message), padding: .PSS).rawRepresentation)
            case (.rsa(let key), .rsaPssRsaeSha512):
                signature = Array(try key.signature(for: SHA512.hash(data: message), padding: .PSS).rawRepresentation)
            case (.rsa(let key), .rsaPkcs1Sha256):
                signature = Array(
                    try key.signature(for: SHA256.hash(data: message), padding: .insecurePKCS1v1_5).rawRepresentation)
            default:
                signature = nil
            }
        } catch {
            throw RootOfTrustError(.failed, "signing failed")
        }
        guard let signature else { throw RootOfTrustError(.unsupported, "the device key cannot sign with \(scheme)") }
        return signature
    }

    public func seal(_ plaintext: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> [UInt8]
    {
        do {
            return Array(
                try ChaChaPoly.seal(plaintext, using: sealingKey(purpose: purpose), authenticating: authenticatedData)
                    .combined)
        } catch {
            throw RootOfTrustError(.failed, "sealing failed")
        }
    }

    public func open(_ sealed: [UInt8], purpose: String, authenticating authenticatedData: [UInt8])
        throws(RootOfTrustError) -> SecretBytes
    {
        do {
            let box = try ChaChaPoly.SealedBox(combined: sealed)
            var plaintext = try ChaChaPoly.open(
                box, using: sealingKey(purpose: purpose), authenticating: authenticatedData)
            defer { plaintext.withUnsafeMutableBytes { secureZero($0) } }
            return SecretBytes(plaintext)
        } catch {
            throw RootOfTrustError(
                .open,
                "does not open: corrupt, truncated, or sealed by another root of trust or for another purpose")
        }
    }

    public func ledgerMarker() throws(RootOfTrustError) -> UInt64? {
        switch marker {
        case .memory(let memory): return memory.value.withLock { $0 }
        case .file(let path): return try LedgerMarkerFile.read(path, rootOfTrust: self)
        }
    }

    public func advanceLedgerMarker(to generation: UInt64) throws(RootOfTrustError) {
        switch marker {
        case .memory(let memory):
            try memory.value.withLock { (current: inout UInt64?) throws(RootOfTrustError) in
                try LedgerMarkerFile.requireForward(from: current, to: generation)
                current = generation
            }
        case .file(let path):
            let current = try LedgerMarkerFile.read(path, rootOfTrust: self)
            try LedgerMarkerFile.requireForward(from: current, to: generation)
            if current != generation { try LedgerMarkerFile.write(generation, to: path, rootOfTrust: self) }
        }
    }

    /// The 256-bit key that seals data for `purpose`; it stays in here.
    private func sealingKey(purpose: String) -> SymmetricKey {
        material.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: bytes),
                salt: Array("keyrack-rot-v1".utf8),
                info: Array(purpose.utf8),
                outputByteCount: 32
            )
        }
    }
}

/// Where a software root of trust keeps its ledger marker.
enum LedgerMarkerStore: Sendable {
    case file(String)
    case memory(MemoryLedgerMarker)
}

/// A ledger marker in memory (a root of trust made from a seed).
final class MemoryLedgerMarker: Sendable {
    let value = Mutex<UInt64?>(nil)
}

/// The ledger marker of a software root of trust, in a file beside the key
/// file: `KRMK` ‖ version (1) ‖ generation (8 bytes, big-endian) ‖ an AEAD
/// box of nothing that authenticates the header (purpose
/// `keyrack-ledger-marker-v1`), so only this root of trust can write a
/// marker it accepts. Written atomically (temporary file, fsync, rename,
/// fsync of the directory), mode 0600.
public enum LedgerMarkerFile {
    static let magic = Array("KRMK".utf8)
    static let version: UInt8 = 1
    static let purpose = "keyrack-ledger-marker-v1"

    /// The marker file of the device key at `keyFile`.
    public static func path(forKeyFile keyFile: String) -> String { keyFile + ".marker" }

    static func read(_ path: String, rootOfTrust: some RootOfTrust) throws(RootOfTrustError) -> UInt64? {
        let bytes: [UInt8]
        switch readFile(atPath: path) {
        case .missing: return nil
        case .unreadable(let reason): throw RootOfTrustError(.io, "the ledger marker \(path): \(reason)")
        case .contents(let contents): bytes = contents
        }
        let refused = RootOfTrustError(
            .marker,
            "the ledger marker \(path) is corrupt or was written by another root of trust; it guards the ledger "
                + "against rollback, so the node does not start without it (restore it, or delete it to trust the "
                + "ledger copies as they are)")
        guard bytes.count == 13 + 12 + 16, Array(bytes.prefix(4)) == magic, bytes[4] == version else { throw refused }
        do {
            _ = try rootOfTrust.open(Array(bytes[13...]), purpose: purpose, authenticating: Array(bytes[0..<13]))
        } catch {
            throw refused
        }
        return UInt64(bigEndianBytes: bytes[5..<13])
    }

    static func write(_ generation: UInt64, to path: String, rootOfTrust: some RootOfTrust) throws(RootOfTrustError) {
        let header = magic + [version] + generation.bigEndianBytes
        let tag = try rootOfTrust.seal([], purpose: purpose, authenticating: header)
        let url = URL(fileURLWithPath: path)
        do {
            try writeAtomically(
                header + tag, to: url.deletingLastPathComponent(), name: url.lastPathComponent)
        } catch {
            throw RootOfTrustError(.io, "cannot write the ledger marker: \(error.reason)")
        }
    }

    static func requireForward(from current: UInt64?, to generation: UInt64) throws(RootOfTrustError) {
        if let current, generation < current {
            throw RootOfTrustError(
                .marker, "the ledger marker is at generation \(current) and never goes back (asked for \(generation))")
        }
    }
}

/// `open(2)`, which a root of trust's own `open` hides inside its methods.
private func openFile(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
    open(path, flags, mode)
}

/// The device key as swift-certificates sees it when it signs the CSR: every
/// signature is made by the root of trust, and the key cannot be serialised.
struct RootOfTrustCertificateSigner: CustomPrivateKey {
    let rootOfTrust: any RootOfTrust
    let publicKey: Certificate.PublicKey

    init(_ rootOfTrust: any RootOfTrust) {
        self.rootOfTrust = rootOfTrust
        publicKey = rootOfTrust.publicKey
    }

    /// X.509 signature algorithms and the schemes that make them.
    private static let algorithms: [(Certificate.SignatureAlgorithm, DeviceSignatureScheme)] = [
        (.ed25519, .ed25519), (.sha256WithRSAEncryption, .rsaPkcs1Sha256),
    ]

    var supportedSignatureAlgorithms: [Certificate.SignatureAlgorithm] {
        let schemes = rootOfTrust.signatureSchemes
        return Self.algorithms.filter { schemes.contains($0.1) }.map(\.0)
    }

    var defaultSignatureAlgorithm: Certificate.SignatureAlgorithm {
        supportedSignatureAlgorithms.first ?? .ed25519
    }

    func signSynchronously(bytes: some DataProtocol, signatureAlgorithm: Certificate.SignatureAlgorithm) throws
        -> Certificate.Signature
    {
        guard let scheme = Self.algorithms.first(where: { $0.0 == signatureAlgorithm })?.1 else {
            throw RootOfTrustError(.unsupported, "the root of trust cannot sign with \(signatureAlgorithm)")
        }
        let signature = try rootOfTrust.sign(Array(bytes), scheme: scheme)
        return try Certificate.Signature(
            signatureAlgorithm: signatureAlgorithm, signatureBytes: ASN1BitString(bytes: signature[...]))
    }

    func serialize(into coder: inout DER.Serializer) throws {
        throw RootOfTrustError(.export, "the device key never leaves its root of trust")
    }

    static var defaultPEMDiscriminator: String { "PRIVATE KEY" }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.publicKey == rhs.publicKey }
    func hash(into hasher: inout Hasher) { hasher.combine(publicKey) }
}
