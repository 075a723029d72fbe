import TrustQuorum

/// Moving one LUKS2 volume from the disk key of one epoch to the next, as
/// a value: which keyslots and tokens it uses and how far it got. The node
/// writes the plan to its agent state **before** each step, and every step
/// is idempotent given the header as it is (``action(for:rack:)`` looks
/// before it leaps), so a crash between any two steps — or in the middle of
/// one — leaves a header that opens with the old key or the new one, and
/// the node finishes the job after restart.
///
/// The order is what makes that true: the new key is added and verified
/// before the old one's token and keyslot are removed, and the old keyslot
/// is removed with the new key as the authorisation (so it works).
///
/// A key is an epoch and a derivation scheme (``DiskKeyVersion``): moving a
/// volume keyed by an earlier release (``DiskKeyScheme/diskOnly``) onto
/// this release's platform-bound key is a plan like any other, possibly
/// within one epoch. A plan written by an earlier release has no schemes
/// and reads as one between disk-only keys.
public struct RekeyPlan: Codable, Sendable, Equatable {
    /// The steps, in order.
    public enum Step: String, Codable, Sendable, CaseIterable, Comparable {
        /// Add the new epoch's key in the new keyslot, authorised by the old key.
        case addKeyslot = "add-keyslot"
        /// Write the token naming the new keyslot and epoch.
        case addToken = "add-token"
        /// Check that the new key opens the new keyslot.
        case verifyNewKey = "verify-new-key"
        /// Remove the old epoch's token.
        case removeOldToken = "remove-old-token"
        /// Remove the old keyslot (after checking it holds the old key), authorised by the new key.
        case removeOldKeyslot = "remove-old-keyslot"
        /// Record that the volume is keyed under the new epoch (and drop the plan).
        case record

        public static func < (lhs: Step, rhs: Step) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }
    }

    /// The disk id.
    public let disk: String
    /// The epoch whose key the volume is moving from.
    public let from: Epoch
    /// The epoch whose key it is moving to.
    public let to: Epoch
    /// The scheme of the key it is moving from.
    public let fromScheme: DiskKeyScheme
    /// The scheme of the key it is moving to.
    public let toScheme: DiskKeyScheme
    /// The keyslot of `from`'s key.
    public let oldKeyslot: Int
    /// The token naming `from`'s keyslot.
    public let oldToken: Int
    /// The keyslot of `to`'s key.
    public let newKeyslot: Int
    /// The token naming `to`'s keyslot.
    public let newToken: Int
    /// The step to take next.
    public private(set) var step: Step

    /// The key the volume is moving from.
    public var fromVersion: DiskKeyVersion { DiskKeyVersion(from, fromScheme) }
    /// The key it is moving to.
    public var toVersion: DiskKeyVersion { DiskKeyVersion(to, toScheme) }

    /// What to do for the current step, given the header now.
    public enum Action: Sendable, Equatable {
        /// `luksAddKey`: `key`'s disk key into `keyslot`, authorised by `authorisedBy`'s.
        case addKeyslot(keyslot: Int, key: DiskKeyVersion, authorisedBy: DiskKeyVersion)
        /// The keyslot is there already (a step repeated after a crash): check it holds `key`'s disk key.
        case confirmKeyslot(keyslot: Int, key: DiskKeyVersion)
        /// `token import` of `token` as `id`.
        case importToken(id: Int, token: KeyrackToken)
        /// `open --test-passphrase`: `key`'s disk key must open `keyslot`.
        case verify(keyslot: Int, key: DiskKeyVersion)
        /// `token remove` of `id`.
        case removeToken(id: Int)
        /// Check `keyslot` holds `holding`'s disk key, then `luksKillSlot` it authorised by `authorisedBy`'s.
        case removeKeyslot(keyslot: Int, holding: DiskKeyVersion, authorisedBy: DiskKeyVersion)
        /// Record the volume as keyed under `key` and drop the plan.
        case record(key: DiskKeyVersion)
        /// The step is done already (it was taken before a crash): go on.
        case nothing
    }

    /// A plan to move `disk` from the key in `current` (token `currentToken`) to `to`,
    /// using the lowest free keyslot and token id of `header`.
    public init(
        disk: String, current: KeyrackToken, currentToken: Int, to: DiskKeyVersion, header: LuksMetadata
    ) throws(VolumeError) {
        guard current.version < to else {
            throw VolumeError(.unexpected, "'\(disk)' is keyed under \(current.version), not before \(to)")
        }
        guard let keyslot = header.freeKeyslot, let token = header.freeToken else {
            throw VolumeError(.unexpected, "the header of '\(disk)' has no free keyslot or token for the new key")
        }
        self.disk = disk
        from = current.epoch
        fromScheme = current.scheme
        self.to = to.epoch
        toScheme = to.scheme
        oldKeyslot = current.keyslot
        oldToken = currentToken
        newKeyslot = keyslot
        newToken = token
        step = .addKeyslot
    }

    private enum CodingKeys: String, CodingKey {
        case disk, from, to, fromScheme, toScheme, oldKeyslot, oldToken, newKeyslot, newToken, step
    }

    /// Decodes a plan; one written by an earlier release (no schemes) moves between disk-only keys.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let move = try container.decodeMove(disk: .disk, from: (.from, .fromScheme), to: (.to, .toScheme))
        (disk, from, fromScheme, to, toScheme) = (
            move.disk, move.from.epoch, move.from.scheme, move.to.epoch, move.to.scheme
        )
        oldKeyslot = try container.decode(Int.self, forKey: .oldKeyslot)
        oldToken = try container.decode(Int.self, forKey: .oldToken)
        newKeyslot = try container.decode(Int.self, forKey: .newKeyslot)
        newToken = try container.decode(Int.self, forKey: .newToken)
        step = try container.decode(Step.self, forKey: .step)
        guard fromVersion < toVersion else {
            throw DecodingError.dataCorruptedError(
                forKey: .to, in: container, debugDescription: "a re-key plan must move to a later key")
        }
    }

    /// The token of the new key.
    public func newTokenValue(rack: RackId) -> KeyrackToken {
        KeyrackToken(rackId: rack, diskId: disk, epoch: to, keyslot: newKeyslot, scheme: toScheme)
    }

    /// The token of the old key.
    public func oldTokenValue(rack: RackId) -> KeyrackToken {
        KeyrackToken(rackId: rack, diskId: disk, epoch: from, keyslot: oldKeyslot, scheme: fromScheme)
    }

    /// What the current step must do to `header`; throws (and nothing is
    /// done) when the header is not in a state this plan can lead to — a
    /// keyslot or token it needs taken by something else, or its old key
    /// gone before the new one is in place.
    public func action(for header: LuksMetadata, rack: RackId) throws(VolumeError) -> Action {
        let new = newTokenValue(rack: rack)
        let old = oldTokenValue(rack: rack)
        func unexpected(_ why: String) -> VolumeError {
            VolumeError(
                .unexpected, "re-keying '\(disk)' from \(fromVersion) to \(toVersion), at \(step.rawValue): \(why)")
        }
        let hasNewToken: Bool
        switch header.tokens[newToken] {
        case nil: hasNewToken = false
        case .keyrack(new)?: hasNewToken = true
        case let other?:
            if step <= .addToken { throw unexpected("token \(newToken) is taken (\(other))") }
            throw unexpected("token \(newToken) is not the new key's (\(other))")
        }
        switch step {
        case .addKeyslot:
            if header.keyslots.contains(newKeyslot) { return .confirmKeyslot(keyslot: newKeyslot, key: toVersion) }
            guard header.keyslots.contains(oldKeyslot), header.tokens[oldToken] == .keyrack(old) else {
                throw unexpected("the old key's keyslot \(oldKeyslot) or token \(oldToken) is gone")
            }
            return .addKeyslot(keyslot: newKeyslot, key: toVersion, authorisedBy: fromVersion)
        case .addToken:
            guard header.keyslots.contains(newKeyslot) else { throw unexpected("keyslot \(newKeyslot) is gone") }
            return hasNewToken ? .nothing : .importToken(id: newToken, token: new)
        case .verifyNewKey:
            guard header.keyslots.contains(newKeyslot), hasNewToken else {
                throw unexpected("keyslot \(newKeyslot) or token \(newToken) is gone")
            }
            return .verify(keyslot: newKeyslot, key: toVersion)
        case .removeOldToken, .removeOldKeyslot, .record:
            // From here on the new key is what opens the volume: it must be in place.
            guard header.keyslots.contains(newKeyslot), hasNewToken else {
                throw unexpected("the new key's keyslot \(newKeyslot) or token \(newToken) is gone")
            }
            switch step {
            case .removeOldToken:
                switch header.tokens[oldToken] {
                case nil: return .nothing
                case .keyrack(old)?: return .removeToken(id: oldToken)
                case let other?: throw unexpected("token \(oldToken) is not the old key's (\(other))")
                }
            case .removeOldKeyslot:
                guard header.keyslots.contains(oldKeyslot) else { return .nothing }
                return .removeKeyslot(keyslot: oldKeyslot, holding: fromVersion, authorisedBy: toVersion)
            default:
                return .record(key: toVersion)
            }
        }
    }

    /// The current step is done: go to the next. Returns false after ``Step/record``.
    public mutating func advance() -> Bool {
        guard let index = Step.allCases.firstIndex(of: step), index + 1 < Step.allCases.count else { return false }
        step = Step.allCases[index + 1]
        return true
    }
}

extension KeyedDecodingContainer {
    /// A disk moving from one key to another (a re-key plan, a re-key to
    /// report), each key stored as an epoch and a scheme; no scheme:
    /// written by an earlier release, so a disk-only key.
    func decodeMove(disk: Key, from: (epoch: Key, scheme: Key), to: (epoch: Key, scheme: Key)) throws -> (
        disk: String, from: DiskKeyVersion, to: DiskKeyVersion
    ) {
        func key(_ keys: (epoch: Key, scheme: Key)) throws -> DiskKeyVersion {
            DiskKeyVersion(
                try decode(Epoch.self, forKey: keys.epoch),
                try decodeIfPresent(DiskKeyScheme.self, forKey: keys.scheme) ?? .diskOnly)
        }
        return (try decode(String.self, forKey: disk), try key(from), try key(to))
    }
}
