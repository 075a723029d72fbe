import KeyrackCore

/// The text form of shares used by `keyrack shamir`: one share per line,
/// `<x>:<hex of y>`, with x in decimal (1…255).
///
/// This form carries secret material by design; it exists for operators who
/// move shares by hand. Errors never quote the hex.
public enum ShareText {
    /// `<x>:<hex of y>`.
    public static func format(_ share: Share) -> String {
        share.y.withUnsafeBytes { "\(share.x):\($0.hexString)" }
    }

    /// A line of input that could not be used, and why. The reason starts
    /// with the 1-based line number: `line 2: the share value is empty`.
    public typealias ParseError = CodedError<ShareTextParseErrorCode>

    /// Parses share lines. Blank lines are skipped (they still count for line
    /// numbers). Every rule that can be checked per line or between lines —
    /// the format, x ≠ 0, no duplicate x, equal lengths — is checked here so
    /// that the error can name the line.
    public static func parse(lines: [Substring]) throws(ParseError) -> [Share] {
        var shares: [Share] = []
        var firstLineOfX = [Int](repeating: 0, count: 256)
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            func failure(_ code: ShareTextParseErrorCode, _ reason: String) -> ParseError {
                ParseError(code, "line \(number): \(reason)")
            }
            let line = raw.trimmingASCIIWhitespace()
            if line.isEmpty { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw failure(.format, "expected <x>:<hex>, found no ':'")
            }
            let xText = line[..<colon]
            let hexText = line[line.index(after: colon)...]
            guard let xValue = Int(xText), (0...255).contains(xValue) else {
                throw failure(.x, "x-coordinate must be a whole number from 1 to 255")
            }
            guard xValue != 0 else {
                throw failure(.x, "x-coordinate 0 is reserved for the secret")
            }
            guard !hexText.isEmpty else { throw failure(.format, "the share value is empty") }
            guard let value = SecretBytes(hex: hexText) else {
                throw failure(.format, "the share value is not an even number of hex digits")
            }
            let x = UInt8(xValue)
            if firstLineOfX[xValue] != 0 {
                throw failure(
                    .duplicate,
                    "duplicate x-coordinate \(x) (first seen on line \(firstLineOfX[xValue]))"
                )
            }
            firstLineOfX[xValue] = number
            if let first = shares.first, first.count != value.count {
                throw failure(
                    .length,
                    "share is \(value.count) bytes long but the first share is \(first.count) bytes"
                )
            }
            shares.append(Share(validatedX: x, y: value))
        }
        return shares
    }
}

/// The codes of ``ShareText/ParseError``.
public struct ShareTextParseErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The line is not `<x>:<hex of y>`: no `:`, or the value is empty or not hex.
    public static let format = ShareTextParseErrorCode("SHAMIR-SHARE-FORMAT")
    /// The x-coordinate is not a whole number from 1 to 255.
    public static let x = ShareTextParseErrorCode("SHAMIR-SHARE-X")
    /// An x-coordinate seen on an earlier line.
    public static let duplicate = ShareTextParseErrorCode("SHAMIR-SHARE-DUPLICATE")
    /// The share's length differs from the first share's.
    public static let length = ShareTextParseErrorCode("SHAMIR-SHARE-LENGTH")
}

extension Substring {
    fileprivate func trimmingASCIIWhitespace() -> Substring {
        var result = self
        while let first = result.first, first.isWhitespace { result.removeFirst() }
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}
