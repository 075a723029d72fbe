/// JSON objects whose members are all strings — every request and answer of
/// the key-release API — written and read without Foundation's coders.
///
/// A get-key request carries a 6–7 KB base64 quote; under load,
/// `JSONEncoder` and `JSONDecoder` cost the load generator a tenth of its
/// time, and the server's `JSONDecoder` takes its slow path whenever a
/// client escapes `/` (as `JSONEncoder` does by default). Reading is a fast
/// path only: ``decode(_:)`` answers nil for anything it does not handle
/// (escapes, non-string members, nesting, invalid UTF-8), and callers then
/// fall back to `JSONDecoder`, so error reporting and edge cases stay
/// Foundation's.
enum FlatJSON {
    /// `{"key":"value",…}` with the members in the order given. Strings are
    /// escaped as `JSONEncoder` escapes them with `.withoutEscapingSlashes`.
    static func encode(_ members: KeyValuePairs<String, String>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(members.reduce(2) { $0 + $1.key.utf8.count + $1.value.utf8.count + 6 })
        out.append(UInt8(ascii: "{"))
        for (index, member) in members.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(member.key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendString(member.value, to: &out)
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
    /// escapes, or nil when the text is anything else (including malformed).
    static func decode(_ bytes: some Collection<UInt8>) -> [String: String]? {
        bytes.withContiguousStorageIfAvailable { decode(buffer: $0) }
            ?? Array(bytes).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    private static func decode(buffer bytes: UnsafeBufferPointer<UInt8>) -> [String: String]? {
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
        guard expect(UInt8(ascii: "{")) else { return nil }
        var members: [String: String] = [:]
        if !expect(UInt8(ascii: "}")) {
            repeat {
                guard let key = string(), expect(UInt8(ascii: ":")), let value = string() else { return nil }
                // A repeated key is left to JSONDecoder.
                guard members.updateValue(value, forKey: key) == nil else { return nil }
            } while expect(UInt8(ascii: ","))
            guard expect(UInt8(ascii: "}")) else { return nil }
        }
        skipSpace()
        return index == bytes.count ? members : nil
    }
}

/// An API message that is a flat object of strings.
package protocol FlatJSONMessage: Codable {
    /// The message from decoded members; nil when one is missing.
    init?(members: [String: String])
    /// The members, keys sorted (as the server's `JSONEncoder` sorts them).
    var members: KeyValuePairs<String, String> { get }
}

extension FlatJSONMessage {
    /// The message from JSON text through the fast path, or nil.
    package init?(flatJSON bytes: some Collection<UInt8>) {
        guard let members = FlatJSON.decode(bytes) else { return nil }
        self.init(members: members)
    }

    package var flatJSON: [UInt8] { FlatJSON.encode(members) }
}

extension ChallengeRequest: FlatJSONMessage {
    package init?(members: [String: String]) {
        guard let peerId = members["peerId"] else { return nil }
        self.init(peerId: peerId)
    }
    package var members: KeyValuePairs<String, String> { ["peerId": peerId] }
}

extension ChallengeResponse: FlatJSONMessage {
    package init?(members: [String: String]) {
        guard let id = members["challengeId"], let nonce = members["nonce"], let expiry = members["expiresAt"]
        else { return nil }
        self.init(challengeId: id, nonce: nonce, expiresAt: expiry)
    }
    package var members: KeyValuePairs<String, String> {
        ["challengeId": challengeId, "expiresAt": expiresAt, "nonce": nonce]
    }
}

extension GetKeyRequest: FlatJSONMessage {
    package init?(members: [String: String]) {
        guard let id = members["challengeId"], let quote = members["quote"], let signature = members["signature"]
        else { return nil }
        self.init(challengeId: id, quote: quote, signature: signature)
    }
    package var members: KeyValuePairs<String, String> {
        ["challengeId": challengeId, "quote": quote, "signature": signature]
    }
}

extension GetKeyResponse: FlatJSONMessage {
    package init?(members: [String: String]) {
        guard let key = members["key"] else { return nil }
        self.init(key: key)
    }
    package var members: KeyValuePairs<String, String> { ["key": key] }
}
