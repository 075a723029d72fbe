import Attestation
import Foundation
import Synchronization

/// The policy in force, reloaded from its file on demand (SIGHUP, or when
/// the file changes). A reload that fails keeps the last good policy and
/// reports why; with no good policy ever loaded, the KMS answers
/// `503 PolicyNotReady`.
public final class PolicyHolder: Sendable {
    /// The policy file.
    public let path: String?
    private let state = Mutex<(policy: AttestationPolicy?, lastError: String?, stamp: FileStamp?)>((nil, nil, nil))

    /// A holder for `path` (nil: no policy configured). Loads it once.
    public init(path: String?) {
        self.path = path
        if path != nil { _ = reload() } else { state.withLock { $0.lastError = "no POLICY_FILE configured" } }
    }

    /// The policy in force, if any.
    public var policy: AttestationPolicy? { state.withLock { $0.policy } }

    /// Why the last load failed (or why there is no policy), if it did.
    public var lastError: String? { state.withLock { $0.lastError } }

    /// Reads the file again. On success the new policy is in force; on
    /// failure the previous one stays and the reason is returned.
    @discardableResult
    public func reload() -> Result<Void, PolicyError> {
        guard let path else { return .failure(PolicyError(.notConfigured, "no POLICY_FILE configured")) }
        let stamp = FileStamp(path: path)
        do throws(PolicyError) {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: path))
            } catch {
                throw PolicyError(.unreadable, "cannot read POLICY_FILE \(path)")
            }
            let policy = try AttestationPolicy(json: data)
            state.withLock { $0 = (policy, nil, stamp) }
            return .success(())
        } catch {
            state.withLock {
                $0.lastError = error.reason
                $0.stamp = stamp
            }
            return .failure(error)
        }
    }

    /// Reloads if the file's modification time, size or inode changed since
    /// the last attempt; returns the result of the reload, or nil if nothing changed.
    public func reloadIfChanged() -> Result<Void, PolicyError>? {
        guard let path else { return nil }
        let current = FileStamp(path: path)
        let previous = state.withLock { $0.stamp }
        guard current != previous else { return nil }
        return reload()
    }
}

/// What identifies a version of a file cheaply.
struct FileStamp: Equatable, Sendable {
    let modified: Int
    let modifiedNanoseconds: Int
    let size: Int
    let inode: UInt64

    init?(path: String) {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        modified = Int(status.st_mtim.tv_sec)
        modifiedNanoseconds = Int(status.st_mtim.tv_nsec)
        size = Int(status.st_size)
        inode = UInt64(status.st_ino)
    }
}
