import KeyrackCore

/// Derives a peer's storage key. The same namespace and peer id give the
/// same key on every replica that shares the key root.
public protocol KeyProvider: Sendable {
    /// A short name for logs and `/readyz` (`local`, `dstack`).
    var name: String { get }

    /// The 32-byte key for `peerId` under `namespace` (the KMS's
    /// `KEY_NAMESPACE_PREFIX`): the derivation path is `namespace + "/" + peerId`.
    func deriveKey(namespace: String, peerId: String) async throws(KeyProviderError) -> SecretBytes

    /// Whether keys can be derived right now (for `/readyz`).
    func checkReady() async throws(KeyProviderError)
}
