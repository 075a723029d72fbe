import Foundation
import Testing
import TrustQuorum

@testable import NodeAgent

/// The re-key plan with nothing but values: what each step does to a
/// header before and after it was taken, and a crash at every point of a
/// whole run against a model of a LUKS2 header.
@Suite("Re-key plan")
struct RekeyPlanTests {
    static let rack = RackId(bytes: Array(0..<16))!

    /// This release's key of `epoch`.
    static func v(_ epoch: Epoch) -> DiskKeyVersion { DiskKeyVersion(epoch) }

    /// Keyslots and the key each holds (nil: the operator's passphrase), and tokens.
    struct Header: Equatable {
        var keyslots: [Int: DiskKeyVersion?]
        var tokens: [Int: LuksMetadata.Token]

        var metadata: LuksMetadata { LuksMetadata(keyslots: Set(keyslots.keys), tokens: tokens) }

        /// The keyslot `key` opens, if any.
        func opens(_ key: DiskKeyVersion) -> Int? { keyslots.first { $0.value == key }?.key }

        /// Whether a node finds a key for it: a keyrack token naming a keyslot that the token's key opens.
        var usable: Bool {
            tokens.values.contains { token in
                guard case .keyrack(let keyrack) = token else { return false }
                return keyslots[keyrack.keyslot] == .some(keyrack.version)
            }
        }

        static func token(_ key: DiskKeyVersion, _ keyslot: Int) -> LuksMetadata.Token {
            .keyrack(
                KeyrackToken(
                    rackId: RekeyPlanTests.rack, diskId: "data0", epoch: key.epoch, keyslot: keyslot,
                    scheme: key.scheme))
        }

        /// Bound to `key` in keyslot 1 (token 0), beside the passphrase in keyslot 0 and another program's token.
        static func bound(_ key: DiskKeyVersion) -> Header {
            Header(keyslots: [0: nil, 1: key], tokens: [0: token(key, 1), 5: .other(type: "systemd-tpm2")])
        }

        /// Bound at epoch 1.
        static let bound = bound(v(1))

        /// Carries out `action` as cryptsetup would; throws where the shell's checks would fail.
        mutating func apply(_ action: RekeyPlan.Action) throws {
            switch action {
            case .addKeyslot(let keyslot, let key, let authorisedBy):
                guard opens(authorisedBy) != nil, keyslots[keyslot] == nil else { throw ModelError() }
                keyslots[keyslot] = key
            case .confirmKeyslot(let keyslot, let key), .verify(let keyslot, let key):
                guard keyslots[keyslot] == .some(key) else { throw ModelError() }
            case .importToken(let id, let token):
                guard tokens[id] == nil else { throw ModelError() }
                tokens[id] = .keyrack(token)
            case .removeToken(let id):
                tokens[id] = nil
            case .removeKeyslot(let keyslot, let holding, let authorisedBy):
                guard keyslots[keyslot] == .some(holding), opens(authorisedBy) != nil else { throw ModelError() }
                keyslots[keyslot] = nil
            case .record, .nothing:
                break
            }
        }
    }

    struct ModelError: Error {}

    static func plan(
        at step: RekeyPlan.Step? = nil, from: DiskKeyVersion = v(1), to: DiskKeyVersion = v(4)
    ) throws -> RekeyPlan {
        var plan = try RekeyPlan(
            disk: "data0",
            current: KeyrackToken(rackId: rack, diskId: "data0", epoch: from.epoch, keyslot: 1, scheme: from.scheme),
            currentToken: 0, to: to, header: Header.bound(from).metadata)
        while let step, plan.step != step {
            let advanced = plan.advance()
            #expect(advanced)
        }
        return plan
    }

    @Test("a new plan takes the lowest free keyslot and token, and refuses a target that is not newer")
    func creation() throws {
        let plan = try Self.plan()
        #expect(plan.step == .addKeyslot)
        #expect((plan.oldKeyslot, plan.oldToken, plan.newKeyslot, plan.newToken) == (1, 0, 2, 1))
        #expect(throws: VolumeError.self) {
            try RekeyPlan(
                disk: "data0", current: KeyrackToken(rackId: Self.rack, diskId: "data0", epoch: 4, keyslot: 1),
                currentToken: 0, to: Self.v(4), header: Header.bound.metadata)
        }
        // Not newer: the same key, or an earlier release's key of the same epoch.
        #expect(throws: VolumeError.self) {
            try Self.plan(from: Self.v(4), to: DiskKeyVersion(4, .diskOnly))
        }
        let full = LuksMetadata(keyslots: Set(0..<32), tokens: [:])
        let error = #expect(throws: VolumeError.self) {
            try RekeyPlan(
                disk: "data0", current: KeyrackToken(rackId: Self.rack, diskId: "data0", epoch: 1, keyslot: 1),
                currentToken: 0, to: Self.v(4), header: full)
        }
        #expect(error?.reason.contains("no free keyslot") == true)
        // It survives the agent state's JSON.
        let decoded = try JSONDecoder().decode(
            RekeyPlan.self, from: try JSONEncoder().encode(try Self.plan(at: .verifyNewKey)))
        #expect(decoded == (try Self.plan(at: .verifyNewKey)))
    }

    @Test("each step: what it does to a header it has not touched yet, and nothing (or a check) once taken")
    func eachStep() throws {
        let new = KeyrackToken(rackId: Self.rack, diskId: "data0", epoch: 4, keyslot: 2)
        var header = Header.bound
        let (one, four) = (Self.v(1), Self.v(4))
        let expected: [(RekeyPlan.Step, RekeyPlan.Action, RekeyPlan.Action)] = [
            (
                .addKeyslot, .addKeyslot(keyslot: 2, key: four, authorisedBy: one),
                .confirmKeyslot(keyslot: 2, key: four)
            ),
            (.addToken, .importToken(id: 1, token: new), .nothing),
            (.verifyNewKey, .verify(keyslot: 2, key: four), .verify(keyslot: 2, key: four)),
            (.removeOldToken, .removeToken(id: 0), .nothing),
            (.removeOldKeyslot, .removeKeyslot(keyslot: 1, holding: one, authorisedBy: four), .nothing),
            (.record, .record(key: four), .record(key: four)),
        ]
        #expect(expected.map(\.0) == RekeyPlan.Step.allCases)
        var plan = try Self.plan()
        for (step, before, after) in expected {
            #expect(plan.step == step)
            #expect(try plan.action(for: header.metadata, rack: Self.rack) == before, "\(step)")
            try header.apply(before)
            #expect(try plan.action(for: header.metadata, rack: Self.rack) == after, "\(step) repeated")
            let advanced = plan.advance()
            #expect(advanced == (step != .record))
        }
        #expect(
            header
                == Header(
                    keyslots: [0: nil, 2: four], tokens: [1: Header.token(four, 2), 5: .other(type: "systemd-tpm2")]))
    }

    @Test("a header the plan cannot lead to is refused before anything is done")
    func unexpectedHeaders() throws {
        let other = LuksMetadata.Token.other(type: "clevis")
        let (one, four) = (Self.v(1), Self.v(4))
        let cases: [(RekeyPlan.Step, Header)] = [
            // The old key's keyslot or token vanished before the new key is in.
            (.addKeyslot, Header(keyslots: [0: nil], tokens: [0: Header.token(one, 1)])),
            (.addKeyslot, Header(keyslots: [0: nil, 1: one], tokens: [:])),
            // The token id the plan chose was taken by another program.
            (.addKeyslot, Header(keyslots: [0: nil, 1: one], tokens: [0: Header.token(one, 1), 1: other])),
            (.addToken, Header(keyslots: [0: nil, 1: one, 2: four], tokens: [0: Header.token(one, 1), 1: other])),
            (.addToken, Header(keyslots: [0: nil, 1: one], tokens: [0: Header.token(one, 1)])),
            // The new key's keyslot or token is gone when the old one is to be removed.
            (.removeOldToken, Header(keyslots: [0: nil, 1: one], tokens: [0: Header.token(one, 1)])),
            (.removeOldKeyslot, Header(keyslots: [0: nil, 1: one, 2: four], tokens: [:])),
            // Token 0 is not the old key's any more.
            (
                .removeOldToken,
                Header(keyslots: [0: nil, 1: one, 2: four], tokens: [0: other, 1: Header.token(four, 2)])
            ),
        ]
        for (step, header) in cases {
            let error = #expect(throws: VolumeError.self, "\(step) \(header)") {
                try Self.plan(at: step).action(for: header.metadata, rack: Self.rack)
            }
            #expect(error?.code == .unexpected)
        }
    }

    @Test(
        "a crash at every point of a run (before or after each step's action) leaves a usable header, and the run completes",
        arguments: [
            (v(1), v(4)),
            // An earlier release's disk-only key onto this release's, within one epoch and across epochs.
            (DiskKeyVersion(3, .diskOnly), v(3)), (DiskKeyVersion(1, .diskOnly), v(4)),
        ])
    func crashAtEveryPoint(from: DiskKeyVersion, to: DiskKeyVersion) throws {
        let steps = RekeyPlan.Step.allCases.count
        for crashPoint in 0..<(2 * steps) {
            var header = Header.bound(from)
            var persisted: RekeyPlan? = try Self.plan(from: from, to: to)
            var keyed = from
            var point = 0
            // Runs from the persisted plan until done or the crash point; returns whether it finished.
            func run(crashing: Bool) throws -> Bool {
                guard var plan = persisted else { return true }
                while true {
                    persisted = plan  // written before the step
                    if crashing, point == crashPoint { return false }
                    point += 1
                    let action = try plan.action(for: header.metadata, rack: Self.rack)
                    try header.apply(action)
                    if case .record(let key) = action {
                        keyed = key
                        persisted = nil
                    }
                    #expect(header.usable, "after \(plan.step) (crash point \(crashPoint))")
                    if crashing, point == crashPoint { return false }
                    point += 1
                    guard plan.advance() else { return true }
                }
            }
            let finished = try run(crashing: true)
            #expect(header.usable, "crash point \(crashPoint)")
            #expect(header.opens(from) != nil || header.opens(to) != nil)
            if !finished { #expect(try run(crashing: false)) }
            #expect(persisted == nil)
            #expect(keyed == to)
            #expect(
                header
                    == Header(
                        keyslots: [0: nil, 2: to], tokens: [1: Header.token(to, 2), 5: .other(type: "systemd-tpm2")]))
        }
    }

    @Test(
        "a plan an earlier release wrote (no schemes) reads as one between disk-only keys; a backward plan is refused")
    func earlierReleasePlan() throws {
        let json = """
            {"disk":"data0","from":1,"to":4,"oldKeyslot":1,"oldToken":0,"newKeyslot":2,"newToken":1,"step":"add-token"}
            """
        let plan = try JSONDecoder().decode(RekeyPlan.self, from: Data(json.utf8))
        #expect(plan.fromVersion == DiskKeyVersion(1, .diskOnly))
        #expect(plan.toVersion == DiskKeyVersion(4, .diskOnly))
        #expect(plan.step == .addToken)
        #expect(plan.newTokenValue(rack: Self.rack).scheme == .diskOnly)
        let backward = json.replacingOccurrences(of: "\"to\":4", with: "\"to\":1")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(RekeyPlan.self, from: Data(backward.utf8)) }
        // This release writes the schemes.
        let written = String(decoding: try JSONEncoder().encode(try Self.plan(to: Self.v(4))), as: UTF8.self)
        #expect(written.contains("\"toScheme\":2"))
    }
}
