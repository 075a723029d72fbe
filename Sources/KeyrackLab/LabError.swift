/// Why a piece of lab tooling (a local rack, a free port, a load run) could
/// not do its job, shaped like swift-certificates' errors: callers match on
/// ``code``; ``reason`` is for people.
public struct LabError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong; stable, and extensible without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: String, Sendable {
            case noFreePort = "LAB-PORT"
            case setup = "LAB-SETUP"
            case start = "LAB-START"
            case timeout = "LAB-TIMEOUT"
        }
        private let backing: Backing
        private init(_ backing: Backing) { self.backing = backing }

        /// No free loopback port could be found.
        public static let noFreePort = Code(.noFreePort)
        /// The lab's files, identities or configurations could not be made.
        public static let setup = Code(.setup)
        /// A process could not be started.
        public static let start = Code(.start)
        /// Something did not happen in time.
        public static let timeout = Code(.timeout)

        public var description: String { backing.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// For people.
    public let reason: String

    /// An error from its parts.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
