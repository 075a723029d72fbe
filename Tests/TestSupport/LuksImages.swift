import Foundation
import KeyrackCore
import NodeAgent
import SecretSharing

#if canImport(Glibc)
    import Glibc
#endif

/// File-backed LUKS2 images made with the real `cryptsetup`, whose keyslot
/// 0 opens with ``passphrase`` (PBKDF2 at its minimum cost: in tests only),
/// in a folder removed on deinit. Without `cryptsetup` the initializer
/// throws an error naming the package to install, so the tests that use
/// it fail rather than skip.
public final class LuksImages: @unchecked Sendable {
    /// The folder.
    public let root: URL
    /// The program.
    public let cryptsetup: Cryptsetup
    /// The test passphrase of every image's keyslot 0.
    public static let passphrase = SecretBytes(Array("correct horse battery staple".utf8))

    /// Images in a new folder under `directory` (the temporary directory by default).
    public init(in directory: URL = FileManager.default.temporaryDirectory) throws {
        cryptsetup = try Cryptsetup.locate()
        root = directory.appendingPathComponent("keyrack-luks-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    /// A path in the folder.
    public func path(_ name: String) -> String { root.appendingPathComponent(name).path }

    /// An empty 32 MiB file.
    public func blank(_ name: String) throws -> String {
        let file = path(name)
        guard FileManager.default.createFile(atPath: file, contents: nil), truncate(file, 32 << 20) == 0 else {
            throw TestSupportError("cannot create \(file)")
        }
        return file
    }

    /// A fresh LUKS2 image whose keyslot 0 opens with ``passphrase``.
    public func image(_ name: String) throws -> String {
        let file = try blank(name)
        try cryptsetup.format(file, key: Self.passphrase)
        return file
    }

    /// The header's metadata as `cryptsetup luksDump --dump-json-metadata` prints it.
    public func dump(_ device: String) throws -> [String: Any] {
        let result = try runProcessBlocking(
            URL(fileURLWithPath: cryptsetup.executable), ["luksDump", "--dump-json-metadata", device])
        guard result.status == 0, let object = try JSONSerialization.jsonObject(with: result.output) as? [String: Any]
        else { throw TestSupportError("luksDump \(device) failed: \(String(decoding: result.errors, as: UTF8.self))") }
        return object
    }

    /// The keyslots `luksDump` lists.
    public func keyslots(_ device: String) throws -> Set<Int> {
        Set((try dump(device)["keyslots"] as? [String: Any] ?? [:]).keys.compactMap { Int($0) })
    }

    /// The keyrack tokens `luksDump` lists.
    public func keyrackTokens(_ device: String) throws -> [KeyrackTokenSummary] {
        let tokens = try dump(device)["tokens"] as? [String: [String: Any]] ?? [:]
        return tokens.compactMap { id, token -> KeyrackTokenSummary? in
            guard token["type"] as? String == "keyrack" else { return nil }
            return KeyrackTokenSummary(
                id: Int(id) ?? -1, epoch: (token["epoch"] as? String).flatMap { UInt64($0) } ?? 0,
                keyslots: token["keyslots"] as? [String] ?? [], rackId: token["rack_id"] as? String ?? "",
                diskId: token["disk_id"] as? String ?? "", version: token["keyrack_version"] as? String ?? "")
        }.sorted { $0.id < $1.id }
    }

    /// Whether `key` opens the image (in any keyslot).
    public func opens(_ device: String, _ key: SecretBytes) throws -> Bool {
        try cryptsetup.test(device, key: key) != nil
    }

    /// The file's bytes.
    public func bytes(_ device: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: device)) }
}

/// A keyrack token as `luksDump` shows it.
public struct KeyrackTokenSummary: Equatable, Sendable, CustomStringConvertible {
    public var id: Int
    public var epoch: UInt64
    public var keyslots: [String]
    public var rackId: String
    public var diskId: String
    /// `keyrack_version`: the key's derivation scheme.
    public var version: String

    public init(id: Int, epoch: UInt64, keyslots: [String], rackId: String, diskId: String, version: String = "2") {
        self.id = id
        self.epoch = epoch
        self.keyslots = keyslots
        self.rackId = rackId
        self.diskId = diskId
        self.version = version
    }

    public var description: String {
        "token \(id): \(diskId) epoch \(epoch) (v\(version)), keyslots \(keyslots), rack \(rackId)"
    }
}
