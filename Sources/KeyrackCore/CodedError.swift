/// The codes of one module's errors: stable strings (`NODE-RUN-LEDGER`,
/// `RACK-TIMED-OUT`, …) that callers match on. A module declares its codes as
/// static constants of its own conforming type, so codes can be added
/// without breaking callers.
public protocol ErrorCodes: Hashable, Sendable, CustomStringConvertible {
    /// The code as it is printed and matched.
    var rawValue: String { get }
}

extension ErrorCodes {
    public var description: String { rawValue }
}

/// An error shaped like swift-certificates' `CertificateError`: a stable
/// ``code`` that equality and hashing look at, and a ``reason`` for people
/// that never carries a secret.
public struct CodedError<Code: ErrorCodes>: Error, Hashable, Sendable, CustomStringConvertible {
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
