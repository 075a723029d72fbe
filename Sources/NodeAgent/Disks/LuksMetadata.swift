import Foundation
import TrustQuorum

/// What a LUKS2 header holds that Keyrack reads: the keyslots in use and
/// the tokens, from `cryptsetup luksDump --dump-json-metadata`.
public struct LuksMetadata: Sendable, Equatable {
    /// A token in the header.
    public enum Token: Sendable, Equatable {
        /// One Keyrack wrote.
        case keyrack(KeyrackToken)
        /// Another program's (systemd-tpm2, clevis, …), of this type: left alone.
        case other(type: String)
    }

    /// The keyslots in use.
    public var keyslots: Set<Int>
    /// The tokens by id.
    public var tokens: [Int: Token]

    /// Metadata from its parts.
    public init(keyslots: Set<Int>, tokens: [Int: Token]) {
        self.keyslots = keyslots
        self.tokens = tokens
    }

    /// Parses the header's JSON; a malformed keyrack token is an error (never skipped).
    public init(json: [UInt8]) throws(VolumeError) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
            let keyslots = object["keyslots"] as? [String: Any], let tokens = object["tokens"] as? [String: Any]
        else { throw VolumeError(.header, "the LUKS2 metadata has no keyslots or tokens") }
        var slots: Set<Int> = []
        for key in keyslots.keys {
            guard let slot = KeyrackToken.decimal(key).map({ Int(clamping: $0) }) else {
                throw VolumeError(.header, "the LUKS2 metadata names a keyslot '\(key)'")
            }
            slots.insert(slot)
        }
        var parsed: [Int: Token] = [:]
        for (key, value) in tokens {
            guard let id = KeyrackToken.decimal(key).map({ Int(clamping: $0) }), let token = value as? [String: Any],
                let type = token["type"] as? String
            else { throw VolumeError(.header, "the LUKS2 metadata has a malformed token '\(key)'") }
            parsed[id] = type == KeyrackToken.type ? .keyrack(try KeyrackToken(object: token)) : .other(type: type)
        }
        self.init(keyslots: slots, tokens: parsed)
    }

    /// The keyrack tokens, by id.
    public var keyrackTokens: [(id: Int, token: KeyrackToken)] {
        tokens.compactMap { id, token in
            guard case .keyrack(let keyrack) = token else { return nil }
            return (id, keyrack)
        }.sorted { $0.id < $1.id }
    }

    /// The lowest keyslot not in use.
    public var freeKeyslot: Int? { KeyrackToken.slots.first { !keyslots.contains($0) } }
    /// The lowest token id not in use.
    public var freeToken: Int? { KeyrackToken.slots.first { tokens[$0] == nil } }

    /// The keyrack tokens of `disk` in `rack`, newest epoch first, after
    /// refusing a header that belongs elsewhere: another rack's token, a
    /// token naming another disk, a token whose keyslot is not in use, or
    /// an epoch after `latest` (this node never committed it).
    public func bindings(rack: RackId, disk: String, latest: Epoch) throws(VolumeError) -> [(
        id: Int, token: KeyrackToken
    )] {
        for (id, token) in keyrackTokens {
            guard token.rackId == rack else {
                throw VolumeError(.foreign, "the header is bound to another rack (\(token.rackId), token \(id))")
            }
            guard token.diskId == disk else {
                throw VolumeError(
                    .foreign, "the header is bound as disk '\(token.diskId)', not '\(disk)' (token \(id))")
            }
            guard token.epoch <= latest else {
                throw VolumeError(
                    .foreign, "token \(id) names epoch \(token.epoch), after this node's latest commit (\(latest))")
            }
            guard keyslots.contains(token.keyslot) else {
                throw VolumeError(.header, "token \(id) names keyslot \(token.keyslot), which is not in use")
            }
        }
        return keyrackTokens.sorted { ($0.token.version, $0.id) > ($1.token.version, $1.id) }
    }
}
