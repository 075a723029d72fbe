/// JSON objects whose members are all strings or integers — every request
/// and answer of the key-release API — written and read without
/// Foundation's coders.
///
/// A get-key request carries a 6–7 KB base64 quote; under load,
/// `JSONEncoder` and `JSONDecoder` cost the load generator a tenth of its
/// time, and the server's `JSONDecoder` takes its slow path whenever a
/// client escapes `/` (as `JSONEncoder` does by default). Reading is a fast
/// path only: ``decode(_:)`` answers nil for anything it does not handle
/// (escapes, fractions, exponents, nesting, invalid UTF-8), and callers then
/// fall back to `JSONDecoder`, so error reporting and edge cases stay
/// Foundation's.
package enum FlatJSON {
    /// A member's value.
    package enum Value: Equatable, Sendable {
        case string(String)
        case integer(Int64)

        var string: String? { if case .string(let text) = self { text } else { nil } }
        var integer: Int64? { if case .integer(let number) = self { number } else { nil } }
        var utf8Count: Int {
            switch self {
            case .string(let text): text.utf8.count + 2
            case .integer: 20
            }
        }
    }

    /// `{"key":value,…}` with the members in the order given. Strings are
    /// escaped as `JSONEncoder` escapes them with `.withoutEscapingSlashes`.
    static func encode(_ members: [(String, Value)]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(members.reduce(2) { $0 + $1.0.utf8.count + $1.1.utf8Count + 4 })
        out.append(UInt8(ascii: "{"))
        for (index, member) in members.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(member.0, to: &out)
            out.append(UInt8(ascii: ":"))
            switch member.1 {
            case .string(let text): appendString(text, to: &out)
            case .integer(let number): out += Array(String(number).utf8)
            }
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    private static func appendString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { bytes in
            // Copy runs of bytes that need no escape (a base64 quote is one run).
            var runStart = 0
            for (index, byte) in bytes.enumerated() where byte == 0x22 || byte == 0x5C || byte < 0x20 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                runStart = index + 1
                out.append(UInt8(ascii: "\\"))
                switch byte {
                case 0x22, 0x5C: out.append(byte)
                case 0x0A: out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(UInt8(ascii: "r"))
                case 0x09: out.append(UInt8(ascii: "t"))
                case 0x08: out.append(UInt8(ascii: "b"))
                case 0x0C: out.append(UInt8(ascii: "f"))
                default:
                    let hex = Array("0123456789abcdef".utf8)
                    out += [
                        UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)],
                        hex[Int(byte & 0xF)],
                    ]
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The members of a JSON object whose members are all strings without
    /// escapes or integers (no fraction or exponent, at most 18 digits), or
    /// nil when the text is anything else (including malformed).
    static func decode(_ bytes: some Collection<UInt8>) -> [String: Value]? {
        bytes.withContiguousStorageIfAvailable { decode(buffer: $0) }
            ?? Array(bytes).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    private static func decode(buffer bytes: UnsafeBufferPointer<UInt8>) -> [String: Value]? {
        var index = 0
        func skipSpace() {
            while index < bytes.count {
                let byte = bytes[index]
                guard byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D else { return }
                index += 1
            }
        }
        func expect(_ byte: UInt8) -> Bool {
            skipSpace()
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        /// A string without escapes or control characters, as valid UTF-8.
        func string() -> String? {
            guard expect(UInt8(ascii: "\"")) else { return nil }
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    defer { index += 1 }
                    return String(validating: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                }
                if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
                index += 1
            }
            return nil
        }
        /// An integer: an optional minus, then 0 or a non-zero digit and at
        /// most 17 more; a fraction or exponent is left to JSONDecoder.
        func integer() -> Int64? {
            skipSpace()
            var negative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            let start = index
            var value: Int64 = 0
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39, index - start < 18 {
                value = value * 10 + Int64(bytes[index] - 0x30)
                index += 1
            }
            let digits = index - start
            guard digits > 0, !(digits > 1 && bytes[start] == 0x30) else { return nil }
            if index < bytes.count {
                let next = bytes[index]
                // More digits, a fraction or an exponent: not ours.
                if (next >= 0x30 && next <= 0x39) || next == UInt8(ascii: ".") || next == UInt8(ascii: "e")
                    || next == UInt8(ascii: "E")
                {
                    return nil
                }
            }
            return negative ? -value : value
        }
        func value() -> Value? {
            skipSpace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: "\"") { return string().map(Value.string) }
            return integer().map(Value.integer)
        }
        guard expect(UInt8(ascii: "{")) else { return nil }
        var members: [String: Value] = [:]
        if !expect(UInt8(ascii: "}")) {
            repeat {
                guard let key = string(), expect(UInt8(ascii: ":")), let value = value() else { return nil }
                // A repeated key is left to JSONDecoder.
                guard members.updateValue(value, forKey: key) == nil else { return nil }
            } while expect(UInt8(ascii: ","))
            guard expect(UInt8(ascii: "}")) else { return nil }
        }
        skipSpace()
        return index == bytes.count ? members : nil
    }
}

/// An API message that is a flat object of strings and integers.
package protocol FlatJSONMessage: Codable {
    /// The message from decoded members; nil when one is missing or of the
    /// wrong kind (JSONDecoder then words the error).
    init?(members: [String: FlatJSON.Value])
    /// The members present, keys sorted (as the server's `JSONEncoder` sorts them).
    var members: [(String, FlatJSON.Value)] { get }
}

extension FlatJSONMessage {
    /// The message from JSON text through the fast path, or nil.
    package init?(flatJSON bytes: some Collection<UInt8>) {
        guard let members = FlatJSON.decode(bytes) else { return nil }
        self.init(members: members)
    }

    package var flatJSON: [UInt8] { FlatJSON.encode(members) }
}

extension [String: FlatJSON.Value] {
    /// A required string member (nil: absent or not a string).
    fileprivate func string(_ key: String) -> String? { self[key]?.string }

    /// An optional member that, when present, must be a string: `.some(nil)`
    /// when it is present with another kind (the message is then declined).
    fileprivate func optionalString(_ key: String) -> String?? {
        guard let value = self[key] else { return .some(nil) }
        guard let text = value.string else { return nil }
        return .some(text)
    }

    fileprivate func optionalInteger(_ key: String) -> Int64?? {
        guard let value = self[key] else { return .some(nil) }
        guard let number = value.integer else { return nil }
        return .some(number)
    }
}

extension ChallengeRequest: FlatJSONMessage {
    package init?(members: [String: FlatJSON.Value]) {
        guard let peerId = members.string("peerId"), let time = members.optionalInteger("time"),
            let proof = members.optionalString("proof")
        else { return nil }
        self.init(peerId: peerId, time: time, proof: proof)
    }
    package var members: [(String, FlatJSON.Value)] {
        var members: [(String, FlatJSON.Value)] = [("peerId", .string(peerId))]
        if let proof { members.append(("proof", .string(proof))) }
        if let time { members.append(("time", .integer(time))) }
        return members
    }
}

extension ChallengeResponse: FlatJSONMessage {
    package init?(members: [String: FlatJSON.Value]) {
        guard let id = members.string("challengeId"), let nonce = members.string("nonce"),
            let expiry = members.string("expiresAt")
        else { return nil }
        self.init(challengeId: id, nonce: nonce, expiresAt: expiry)
    }
    package var members: [(String, FlatJSON.Value)] {
        [("challengeId", .string(challengeId)), ("expiresAt", .string(expiresAt)), ("nonce", .string(nonce))]
    }
}

extension GetKeyRequest: FlatJSONMessage {
    package init?(members: [String: FlatJSON.Value]) {
        guard let id = members.string("challengeId"), let quote = members.string("quote"),
            let signature = members.string("signature"), let wrapKey = members.optionalString("wrapKey")
        else { return nil }
        self.init(challengeId: id, quote: quote, signature: signature, wrapKey: wrapKey)
    }
    package var members: [(String, FlatJSON.Value)] {
        var members: [(String, FlatJSON.Value)] = [
            ("challengeId", .string(challengeId)), ("quote", .string(quote)), ("signature", .string(signature)),
        ]
        if let wrapKey { members.append(("wrapKey", .string(wrapKey))) }
        return members
    }
}

extension GetKeyResponse: FlatJSONMessage {
    package init?(members: [String: FlatJSON.Value]) {
        switch (members.optionalString("key"), members.optionalString("wrappedKey")) {
        case (.some(let key?), .some(nil)): self.init(key: key)
        case (.some(nil), .some(let wrapped?)): self.init(wrappedKey: wrapped)
        default: return nil
        }
    }
    package var members: [(String, FlatJSON.Value)] {
        var members: [(String, FlatJSON.Value)] = []
        if let key { members.append(("key", .string(key))) }
        if let wrappedKey { members.append(("wrappedKey", .string(wrappedKey))) }
        return members
    }
}
