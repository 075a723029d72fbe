import KeyrackCore

/// Why a piece of lab tooling (a local rack, a free port) could not do its job.
public typealias LabError = CodedError<LabErrorCode>

/// The codes of ``LabError``.
public struct LabErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// No free loopback port could be found.
    public static let noFreePort = LabErrorCode("LAB-PORT")
    /// The lab's files, identities or configurations could not be made.
    public static let setup = LabErrorCode("LAB-SETUP")
    /// A process could not be started, or exited.
    public static let start = LabErrorCode("LAB-START")
    /// Something did not happen in time.
    public static let timeout = LabErrorCode("LAB-TIMEOUT")
}
