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

    /// A line of input that could not be used, and why.
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// The 1-based line number.
        public let line: Int
        /// What is wrong with it.
        public let reason: String

        public var description: String { "line \(line): \(reason)" }
    }

    /// Parses share lines. Blank lines are skipped (they still count for line
    /// numbers). Every rule that can be checked per line or between lines —
    /// the format, x ≠ 0, no duplicate x, equal lengths — is checked here so
    /// that the error can name the line.
    public static func parse(lines: [Substring]) throws(ParseError) -> [Share] {
        var shares: [Share] = []
        var firstLineOfX = [Int](repeating: 0, count: 256)
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            let line = raw.trimmingASCIIWhitespace()
            if line.isEmpty { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ParseError(line: number, reason: "expected <x>:<hex>, found no ':'")
            }
            let xText = line[..<colon]
            let hexText = line[line.index(after: colon)...]
            guard let xValue = Int(xText), (0...255).contains(xValue) else {
                throw ParseError(line: number, reason: "x-coordinate must be a whole number from 1 to 255")
            }
            guard xValue != 0 else {
                throw ParseError(line: number, reason: "x-coordinate 0 is reserved for the secret")
            }
            guard !hexText.isEmpty else { throw ParseError(line: number, reason: "the share value is empty") }
            guard let value = SecretBytes(hex: hexText) else {
                throw ParseError(line: number, reason: "the share value is not an even number of hex digits")
            }
            let x = UInt8(xValue)
            if firstLineOfX[xValue] != 0 {
                throw ParseError(
                    line: number,
                    reason: "duplicate x-coordinate \(x) (first seen on line \(firstLineOfX[xValue]))"
                )
            }
            firstLineOfX[xValue] = number
            if let first = shares.first, first.count != value.count {
                throw ParseError(
                    line: number,
                    reason: "share is \(value.count) bytes long but the first share is \(first.count) bytes"
                )
            }
            shares.append(Share(validatedX: x, y: value))
        }
        return shares
    }
}

extension Substring {
    fileprivate func trimmingASCIIWhitespace() -> Substring {
        var result = self
        while let first = result.first, first.isWhitespace { result.removeFirst() }
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}
