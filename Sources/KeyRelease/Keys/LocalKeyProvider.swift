import Crypto
import Foundation
import KeyrackCore

#if canImport(Glibc)
    import Glibc
#endif

/// Keys derived from a 32-byte root kept in a file:
/// `key = HKDF-SHA256(ikm: root, salt: "keyrack-kms-v1", info: namespace + "/" + peerId)`.
///
/// The file is made once, by `keyrack kms init-root` (``createRoot(at:)``:
/// 32 random bytes, mode 0600, never overwriting), and copied to every
/// replica that must hand out the same keys. The KMS never creates it: a
/// replica started from another directory would silently derive different
/// keys. A missing file, one that is not exactly 32 bytes, or one readable
/// by group or others stops start-up with a message naming `KEY_ROOT_FILE`.
public struct LocalKeyProvider: KeyProvider {
    public let name = "local"
    private let root: SecretBytes

    /// Loads the root from `path`; a missing file is an error.
    public init(rootFile path: String) throws(KeyProviderError) {
        root = try Self.load(path)
    }

    /// Creates a new root at `path` (mode 0600, written and synced before
    /// it is renamed into place); an existing file is never replaced.
    public static func createRoot(at path: String) throws(KeyProviderError) {
        _ = try create(path)
    }

    /// A provider with the given root (for tests and the demo).
    public init(root: SecretBytes) throws(KeyProviderError) {
        guard root.count == 32 else { throw KeyProviderError(.keyRoot, "the key root must be 32 bytes") }
        self.root = root
    }

    public func deriveKey(namespace: String, peerId: String) -> SecretBytes {
        let key = root.withUnsafeBytes { rootBytes in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: rootBytes),
                salt: Array("keyrack-kms-v1".utf8),
                info: Array("\(namespace)/\(peerId)".utf8),
                outputByteCount: 32
            )
        }
        return key.withUnsafeBytes { SecretBytes($0) }
    }

    public func checkReady() {}

    private static func load(_ path: String) throws(KeyProviderError) -> SecretBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            guard errno == ENOENT else {
                throw KeyProviderError(.keyRoot, "cannot open KEY_ROOT_FILE \(path): errno \(errno)")
            }
            throw KeyProviderError(
                .keyRootMissing,
                "KEY_ROOT_FILE \(path) does not exist; create it once with `keyrack kms init-root --out \(path)` "
                    + "and give every replica a copy (the KMS never creates it, so replicas cannot diverge)"
            )
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw KeyProviderError(.keyRoot, "cannot stat KEY_ROOT_FILE \(path)")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw KeyProviderError(
                .keyRoot,
                "KEY_ROOT_FILE \(path) is readable by group or others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it"
            )
        }
        guard status.st_size == 32 else {
            throw KeyProviderError(
                .keyRoot, "KEY_ROOT_FILE \(path) must hold exactly 32 bytes, it holds \(status.st_size)")
        }
        var failed = false
        let root = SecretBytes(count: 32) { buffer in
            failed = read(descriptor, buffer.baseAddress, 32) != 32
        }
        guard !failed else { throw KeyProviderError(.keyRoot, "cannot read KEY_ROOT_FILE \(path)") }
        return root
    }

    private static func create(_ path: String) throws(KeyProviderError) -> SecretBytes {
        // Written to a temporary name and linked into place: the final name
        // appears only with all 32 bytes synced, and link(2) never replaces
        // an existing file.
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KeyProviderError(.keyRoot, "cannot create \(temporary): errno \(errno)")
        }
        defer { unlink(temporary) }
        var random = SystemRandomSource()
        let root = random.secretBytes(32)
        let written = root.withUnsafeBytes { write(descriptor, $0.baseAddress, 32) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == 32, synced else {
            throw KeyProviderError(.keyRoot, "cannot write \(temporary): errno \(errno)")
        }
        guard link(temporary, path) == 0 else {
            if errno == EEXIST {
                throw KeyProviderError(.keyRootExists, "\(path) exists already; a key root is never overwritten")
            }
            throw KeyProviderError(.keyRoot, "cannot create \(path): errno \(errno)")
        }
        syncDirectory(of: path)
        return root
    }

    private static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let descriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }
}
