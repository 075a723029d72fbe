/// Why a split, combine or recompute was refused.
///
/// Each case names the rule that was broken; none carries secret bytes.
public enum SecretSharingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The threshold K is outside 2 ≤ K ≤ N.
    case thresholdOutOfRange(threshold: Int, shares: Int)
    /// The number of shares N is outside K ≤ N ≤ 255.
    case shareCountOutOfRange(shares: Int)
    /// Fewer shares than the threshold were given.
    case notEnoughShares(have: Int, need: Int)
    /// Two shares carry the same x-coordinate.
    case duplicateCoordinate(x: UInt8)
    /// A share carries x = 0, the coordinate of the secret itself.
    case zeroCoordinate
    /// Shares of different lengths were mixed.
    case lengthMismatch(expected: Int, found: Int, x: UInt8)
    /// The secret, or a share, is empty.
    case emptySecret
    /// More than the threshold were given and the extra ones do not lie on
    /// the polynomial the first K define: at least one share is wrong.
    case inconsistentShares(x: UInt8)

    public var description: String {
        switch self {
        case .thresholdOutOfRange(let threshold, let shares):
            return
                "threshold \(threshold) is out of range: it must be at least 2 and at most the number of shares (\(shares))"
        case .shareCountOutOfRange(let shares):
            return "share count \(shares) is out of range: it must be between 2 and 255"
        case .notEnoughShares(let have, let need):
            return "not enough shares: \(have) given, \(need) needed"
        case .duplicateCoordinate(let x):
            return "two shares have the same x-coordinate \(x)"
        case .zeroCoordinate:
            return "a share has x-coordinate 0, which is reserved for the secret"
        case .lengthMismatch(let expected, let found, let x):
            return "share with x-coordinate \(x) is \(found) bytes long, expected \(expected)"
        case .emptySecret:
            return "the secret is empty"
        case .inconsistentShares(let x):
            return "share with x-coordinate \(x) does not agree with the others: at least one share is wrong"
        }
    }
}
