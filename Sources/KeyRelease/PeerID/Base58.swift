/// Base58 with the Bitcoin alphabet (libp2p's "base58btc"), without a
/// multibase prefix.
enum Base58 {
    static let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)

    /// The digit each ASCII byte stands for, or 0xFF.
    static let digits: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
        return table
    }()

    /// Decodes `text`; `nil` if a character is not in the alphabet.
    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let input = Array(text.utf8)
        let leadingZeros = input.prefix { $0 == alphabet[0] }.count
        // log(58) / log(256) ≈ 0.733: enough room for the big-endian number.
        var number = [UInt8](repeating: 0, count: input.count * 733 / 1000 + 1)
        var used = 0
        for character in input {
            var carry = Int(digits[Int(character)])
            guard carry != 0xFF else { return nil }
            var index = 0
            var position = number.count - 1
            while (carry != 0 || index < used) && position >= 0 {
                carry += 58 * Int(number[position])
                number[position] = UInt8(carry & 0xFF)
                carry >>= 8
                index += 1
                position -= 1
            }
            used = index
        }
        let significant = number.drop { $0 == 0 }
        return [UInt8](repeating: 0, count: leadingZeros) + significant
    }

    /// Encodes `bytes`.
    static func encode(_ bytes: [UInt8]) -> String {
        let leadingZeros = bytes.prefix { $0 == 0 }.count
        var digits = [UInt8](repeating: 0, count: bytes.count * 138 / 100 + 1)
        var used = 0
        for byte in bytes {
            var carry = Int(byte)
            var index = 0
            var position = digits.count - 1
            while (carry != 0 || index < used) && position >= 0 {
                carry += 256 * Int(digits[position])
                digits[position] = UInt8(carry % 58)
                carry /= 58
                index += 1
                position -= 1
            }
            used = index
        }
        let significant = digits.drop { $0 == 0 }
        let characters = [UInt8](repeating: alphabet[0], count: leadingZeros) + significant.map { alphabet[Int($0)] }
        return String(decoding: characters, as: UTF8.self)
    }
}
