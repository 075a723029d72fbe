import Crypto
import Foundation
import KeyrackCore

#if canImport(Glibc)
    import Glibc
#endif

/// Keys derived from a 32-byte root kept in a file:
/// `key = HKDF-SHA256(ikm: root, salt: "keyrack-kms-v1", info: namespace + "/" + peerId)`.
///
/// The file is created with mode 0600 and 32 random bytes if it does not
/// exist. An existing file must be exactly 32 bytes and readable by its owner
/// only; anything else stops start-up with a message naming the file.
public struct LocalKeyProvider: KeyProvider {
    public let name = "local"
    private let root: SecretBytes

    /// Loads the root from `path`, creating it if missing.
    public init(rootFile path: String) throws(KeyProviderError) {
        root = try Self.loadOrCreate(path)
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

    private static func loadOrCreate(_ path: String) throws(KeyProviderError) -> SecretBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            guard errno == ENOENT else {
                throw KeyProviderError(.keyRoot, "cannot open KEY_ROOT_FILE \(path): errno \(errno)")
            }
            return try create(path)
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
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KeyProviderError(.keyRoot, "cannot create KEY_ROOT_FILE \(path): errno \(errno)")
        }
        defer { close(descriptor) }
        var random = SystemRandomSource()
        let root = random.secretBytes(32)
        let written = root.withUnsafeBytes { write(descriptor, $0.baseAddress, 32) }
        guard written == 32, fsync(descriptor) == 0 else {
            unlink(path)
            throw KeyProviderError(.keyRoot, "cannot write KEY_ROOT_FILE \(path): errno \(errno)")
        }
        return root
    }
}
