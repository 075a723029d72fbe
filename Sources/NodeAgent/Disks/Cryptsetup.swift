import Foundation
import KeyrackCore
import SecretSharing

/// Debian's `cryptsetup` program (package `cryptsetup-bin`), run as a child
/// process. Keys reach it only through pipes: standard input
/// (`--key-file=-`) and, for a second key, an inherited descriptor named
/// `/dev/fd/3` — never an argument, the environment or a file. Every
/// command that may change a header first checks both header copies
/// (``LuksHeaderCheck``), so a damaged header is refused before
/// libcryptsetup can rewrite it.
///
/// Keyslots Keyrack enrolls use PBKDF2 with the minimum iteration count:
/// the key is 32 random bytes, which no key-derivation cost makes harder
/// to guess (systemd-cryptenroll does the same for its TPM2 and FIDO2
/// keys), and it keeps unlocking at boot fast.
public struct Cryptsetup: Sendable {
    /// The program's path.
    public let executable: String
    /// How long one command may run.
    public var timeout: Duration = .seconds(120)

    /// The message for a machine without the program.
    public static let missing = VolumeError(
        .cryptsetupMissing,
        "cryptsetup is not installed; install the Debian package cryptsetup-bin (apt-get install cryptsetup-bin)")

    /// The directories searched by default (cryptsetup lives in /usr/sbin, often not on a user's PATH).
    public static let defaultSearchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]

    /// Finds `cryptsetup` in `searchPath`; throws ``missing`` if it is not there.
    public static func locate(searchPath: [String] = defaultSearchPath) throws(VolumeError) -> Cryptsetup {
        for directory in searchPath {
            let path = URL(fileURLWithPath: directory).appendingPathComponent("cryptsetup").path
            if FileManager.default.isExecutableFile(atPath: path) { return Cryptsetup(executable: path) }
        }
        throw missing
    }

    /// The program at `executable`.
    public init(executable: String) {
        self.executable = executable
    }

    static let fastKeyslot = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]

    /// Runs one command; a non-zero exit is an error naming the command and cryptsetup's reason.
    @discardableResult
    func run(
        _ arguments: [String], stdin: SecretBytes? = nil, extra: [SecretBytes] = [], allowing: Set<Int32> = [0]
    ) throws(VolumeError) -> ChildProcess.Finished {
        let finished: ChildProcess.Finished
        do {
            finished = try ChildProcess.run(executable, arguments, stdin: stdin, extra: extra, timeout: timeout)
        } catch {
            if !FileManager.default.isExecutableFile(atPath: executable) { throw Self.missing }
            throw VolumeError(.cryptsetupFailed, "cryptsetup \(arguments[0]): \(error.reason)")
        }
        if finished.timedOut {
            throw VolumeError(.cryptsetupFailed, "cryptsetup \(arguments[0]) did not finish within \(timeout)")
        }
        guard allowing.contains(finished.status) else {
            throw VolumeError(
                .cryptsetupFailed,
                "cryptsetup \(arguments[0]) failed (exit \(finished.status)): \(finished.lastErrorLine)")
        }
        return finished
    }

    /// Refuses a device that is missing or whose header is not an intact LUKS2 header.
    public func checkHeader(_ device: String) throws(VolumeError) {
        switch LuksHeaderCheck.check(try LuksHeaderCheck.read(device)) {
        case .intact: return
        case .luks1:
            throw VolumeError(
                .header, "\(device) has a LUKS1 header; only LUKS2 can be bound (cryptsetup convert --type luks2)")
        case .notLuks: throw VolumeError(.header, "\(device) has no LUKS2 header")
        case .damaged(let why):
            throw VolumeError(
                .header,
                "the LUKS2 header of \(device) is damaged (\(why)); it was left untouched: restore it from a "
                    + "header backup (cryptsetup luksHeaderRestore) or repair it by hand")
        }
    }

    /// The header's keyslots and tokens (after ``checkHeader(_:)``).
    public func metadata(_ device: String) throws(VolumeError) -> LuksMetadata {
        try checkHeader(device)
        let dump = try run(["luksDump", "--dump-json-metadata", device])
        return try LuksMetadata(json: dump.output)
    }

    /// The keyslot `key` opens (in `keyslot` only, if given), or nil if it opens none; the device is not activated.
    public func test(_ device: String, key: SecretBytes, keyslot: Int? = nil) throws(VolumeError) -> Int? {
        try checkHeader(device)
        var arguments = ["open", "--test-passphrase", "--verbose", "--disable-external-tokens", "--key-file=-"]
        if let keyslot { arguments += ["--key-slot", "\(keyslot)"] }
        // Exit 2: no keyslot opens with this key.
        let finished = try run(arguments + [device], stdin: key, allowing: [0, 2])
        guard finished.status == 0 else { return nil }
        let text = String(decoding: finished.output + finished.errors, as: UTF8.self)
        guard let line = text.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("Key slot ") }),
            let slot = line.split(separator: " ").dropFirst(2).first.flatMap({ Int($0) })
        else {
            if let keyslot { return keyslot }
            throw VolumeError(.cryptsetupFailed, "cryptsetup open --test-passphrase did not say which keyslot opened")
        }
        return slot
    }

    /// Whether a device-mapper mapping named `mapper` is active.
    public func isActive(_ mapper: String) throws(VolumeError) -> Bool {
        try run(["status", mapper], allowing: [0, 4]).status == 0
    }

    /// Opens `device` as `/dev/mapper/<mapper>` with `key` from `keyslot`.
    public func open(_ device: String, mapper: String, key: SecretBytes, keyslot: Int) throws(VolumeError) {
        try checkHeader(device)
        try run(
            [
                "open", "--type", "luks2", "--disable-external-tokens", "--key-file=-", "--key-slot", "\(keyslot)",
                device, mapper,
            ], stdin: key)
    }

    /// Adds `new` in `keyslot`, authorised by `existing` (a key of another slot).
    public func addKey(_ device: String, existing: SecretBytes, new: SecretBytes, keyslot: Int) throws(VolumeError) {
        try checkHeader(device)
        try run(
            ["luksAddKey", "--batch-mode"] + Self.fastKeyslot + [
                "--disable-external-tokens", "--key-file=-", "--key-slot", "\(keyslot)", device, "/dev/fd/3",
            ],
            stdin: existing, extra: [new])
    }

    /// Removes `keyslot`, authorised by `key` (the key of another slot, proving it still opens the volume).
    public func killSlot(_ device: String, keyslot: Int, authorisedBy key: SecretBytes) throws(VolumeError) {
        try checkHeader(device)
        try run(
            ["luksKillSlot", "--batch-mode", "--disable-external-tokens", "--key-file=-", device, "\(keyslot)"],
            stdin: key)
    }

    /// Writes `token` as token `id`.
    public func importToken(_ device: String, id: Int, token: KeyrackToken) throws(VolumeError) {
        try checkHeader(device)
        try run(
            ["token", "import", "--json-file", "-", "--token-id", "\(id)", device],
            stdin: SecretBytes(Array(token.json())))
    }

    /// Removes token `id`.
    public func removeToken(_ device: String, id: Int) throws(VolumeError) {
        try checkHeader(device)
        try run(["token", "remove", "--token-id", "\(id)", device])
    }

    /// Writes a new LUKS2 header on `device` whose only key is `key`, in keyslot 0.
    public func format(_ device: String, key: SecretBytes) throws(VolumeError) {
        try run(
            ["luksFormat", "--type", "luks2", "--batch-mode"] + Self.fastKeyslot + [
                "--key-file=-", "--key-slot", "0", device,
            ], stdin: key)
    }
}
