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

    /// Keyslots and the epoch whose key each holds (nil: the operator's passphrase), and tokens.
    struct Header: Equatable {
        var keyslots: [Int: Epoch?]
        var tokens: [Int: LuksMetadata.Token]

        var metadata: LuksMetadata { LuksMetadata(keyslots: Set(keyslots.keys), tokens: tokens) }

        /// The keyslot `epoch`'s key opens, if any.
        func opens(_ epoch: Epoch) -> Int? { keyslots.first { $0.value == epoch }?.key }

        /// Whether a node finds a key for it: a keyrack token naming a keyslot that its epoch's key opens.
        var usable: Bool {
            tokens.values.contains { token in
                guard case .keyrack(let keyrack) = token else { return false }
                return keyslots[keyrack.keyslot] == .some(keyrack.epoch)
            }
        }

        static func token(_ epoch: Epoch, _ keyslot: Int) -> LuksMetadata.Token {
            .keyrack(KeyrackToken(rackId: RekeyPlanTests.rack, diskId: "data0", epoch: epoch, keyslot: keyslot))
        }

        /// Bound at epoch 1 in keyslot 1 (token 0), beside the passphrase in keyslot 0 and another program's token.
        static let bound = Header(keyslots: [0: nil, 1: 1], tokens: [0: token(1, 1), 5: .other(type: "systemd-tpm2")])

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

    static func plan(at step: RekeyPlan.Step? = nil) throws -> RekeyPlan {
        var plan = try RekeyPlan(
            disk: "data0", current: KeyrackToken(rackId: rack, diskId: "data0", epoch: 1, keyslot: 1), currentToken: 0,
            to: 4, header: Header.bound.metadata)
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
                currentToken: 0, to: 4, header: Header.bound.metadata)
        }
        let full = LuksMetadata(keyslots: Set(0..<32), tokens: [:])
        let error = #expect(throws: VolumeError.self) {
            try RekeyPlan(
                disk: "data0", current: KeyrackToken(rackId: Self.rack, diskId: "data0", epoch: 1, keyslot: 1),
                currentToken: 0, to: 4, header: full)
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
        let expected: [(RekeyPlan.Step, RekeyPlan.Action, RekeyPlan.Action)] = [
            (.addKeyslot, .addKeyslot(keyslot: 2, key: 4, authorisedBy: 1), .confirmKeyslot(keyslot: 2, key: 4)),
            (.addToken, .importToken(id: 1, token: new), .nothing),
            (.verifyNewKey, .verify(keyslot: 2, key: 4), .verify(keyslot: 2, key: 4)),
            (.removeOldToken, .removeToken(id: 0), .nothing),
            (.removeOldKeyslot, .removeKeyslot(keyslot: 1, holding: 1, authorisedBy: 4), .nothing),
            (.record, .record(epoch: 4), .record(epoch: 4)),
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
                == Header(keyslots: [0: nil, 2: 4], tokens: [1: Header.token(4, 2), 5: .other(type: "systemd-tpm2")]))
    }

    @Test("a header the plan cannot lead to is refused before anything is done")
    func unexpectedHeaders() throws {
        let other = LuksMetadata.Token.other(type: "clevis")
        let cases: [(RekeyPlan.Step, Header)] = [
            // The old key's keyslot or token vanished before the new key is in.
            (.addKeyslot, Header(keyslots: [0: nil], tokens: [0: Header.token(1, 1)])),
            (.addKeyslot, Header(keyslots: [0: nil, 1: 1], tokens: [:])),
            // The token id the plan chose was taken by another program.
            (.addKeyslot, Header(keyslots: [0: nil, 1: 1], tokens: [0: Header.token(1, 1), 1: other])),
            (.addToken, Header(keyslots: [0: nil, 1: 1, 2: 4], tokens: [0: Header.token(1, 1), 1: other])),
            (.addToken, Header(keyslots: [0: nil, 1: 1], tokens: [0: Header.token(1, 1)])),
            // The new key's keyslot or token is gone when the old one is to be removed.
            (.removeOldToken, Header(keyslots: [0: nil, 1: 1], tokens: [0: Header.token(1, 1)])),
            (.removeOldKeyslot, Header(keyslots: [0: nil, 1: 1, 2: 4], tokens: [:])),
            // Token 0 is not the old key's any more.
            (.removeOldToken, Header(keyslots: [0: nil, 1: 1, 2: 4], tokens: [0: other, 1: Header.token(4, 2)])),
        ]
        for (step, header) in cases {
            let error = #expect(throws: VolumeError.self, "\(step) \(header)") {
                try Self.plan(at: step).action(for: header.metadata, rack: Self.rack)
            }
            #expect(error?.code == .unexpected)
        }
    }

    @Test(
        "a crash at every point of a run (before or after each step's action) leaves a usable header, and the run completes"
    )
    func crashAtEveryPoint() throws {
        let steps = RekeyPlan.Step.allCases.count
        for crashPoint in 0..<(2 * steps) {
            var header = Header.bound
            var persisted: RekeyPlan? = try Self.plan()
            var keyed: Epoch = 1
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
                    if case .record(let epoch) = action {
                        keyed = epoch
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
            #expect(header.opens(1) != nil || header.opens(4) != nil)
            if !finished { #expect(try run(crashing: false)) }
            #expect(persisted == nil)
            #expect(keyed == 4)
            #expect(
                header
                    == Header(
                        keyslots: [0: nil, 2: 4], tokens: [1: Header.token(4, 2), 5: .other(type: "systemd-tpm2")]))
        }
    }
}
