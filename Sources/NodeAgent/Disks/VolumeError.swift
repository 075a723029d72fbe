/// Why a LUKS2 volume could not be bound, opened or re-keyed: a stable
/// code to match on and a sentence for people. It never holds a key.
public struct VolumeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The stable code.
    public enum Code: String, Sendable, Equatable, Codable {
        /// The `cryptsetup` program is not installed.
        case cryptsetupMissing = "NODE-CRYPTSETUP-MISSING"
        /// A `cryptsetup` command failed.
        case cryptsetupFailed = "NODE-CRYPTSETUP-FAILED"
        /// The device the configuration names does not exist.
        case deviceMissing = "NODE-VOLUME-MISSING"
        /// The device holds no LUKS2 header, or a damaged one (it is left untouched).
        case header = "NODE-VOLUME-HEADER"
        /// The header belongs to another rack or another disk, or names an epoch this node has not committed.
        case foreign = "NODE-VOLUME-FOREIGN"
        /// A key does not open the keyslot it should.
        case key = "NODE-VOLUME-KEY"
        /// The volume carries no keyrack token yet (`keyrack node luks-bind`).
        case unbound = "NODE-VOLUME-UNBOUND"
        /// The volume is bound already.
        case bound = "NODE-VOLUME-BOUND"
        /// `luks-format` refuses a device that is not empty.
        case notEmpty = "NODE-VOLUME-NOT-EMPTY"
        /// The header is not in a state the re-key step expects (someone else changed it).
        case unexpected = "NODE-VOLUME-UNEXPECTED"
        /// The disk is not a LUKS2 volume of this node's configuration.
        case unknown = "NODE-DISK-UNKNOWN"
        /// The key is not available (the rack secret is not loaded, or the epoch is unknown).
        case locked = "NODE-LOCKED"
        /// The re-key progress could not be written to the agent state (the step is not taken).
        case stateWrite = "NODE-STATE-WRITE"
    }

    /// What went wrong, as a code.
    public let code: Code
    /// What went wrong, for people.
    public let reason: String

    /// An error from its parts.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }

    /// The same error as the admin API reports it.
    public var adminError: AdminError { AdminError(code: code.rawValue, reason: reason) }
}
