import Crypto
import Foundation
import KeyrackCore
import Testing
import TrustQuorum

@testable import NodeAgent

/// The node's measurement policy in force: the policy file, operator-signed
/// updates (checked, persisted, never rolled back), SIGHUP reloads.
@Suite("Node policy store: operator-signed measurement policies and reloads")
struct NodePolicyStoreTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("policy-store-\(UUID().uuidString)")
    let rack = RackId(bytes: Array(0..<16))!
    let ca: ManufacturingCA
    let alice: OperatorIdentity
    let verifier: OperatorCertificateVerifier
    /// This node's own software measures as this.
    let own = Array(repeating: UInt8(0xAB), count: 32)
    let other = Array(repeating: UInt8(0xCD), count: 32)

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        ca = try ManufacturingCA.create(in: directory.appendingPathComponent("ca"))
        alice = try OperatorIdentity.create(in: directory.appendingPathComponent("alice"), ca: ca, name: "alice")
        verifier = try OperatorCertificateVerifier(
            bundle: directory.appendingPathComponent("alice/operator-ca.pem").path)
        for name in ["ledger-a", "ledger-b", "config"] {
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent(name), withIntermediateDirectories: true)
        }
    }

    var ledgers: [URL] { [directory.appendingPathComponent("ledger-a"), directory.appendingPathComponent("ledger-b")] }
    var file: URL { directory.appendingPathComponent("config/policy.json") }

    func policy(_ digests: [[UInt8]], mode: String = "enforce") -> Data {
        let list = digests.map { "\"\($0.hexString)\"" }.joined(separator: ",")
        return Data("{\"mode\":\"\(mode)\",\"softwareRootOfTrust\":{\"allow\":{\"executable\":[\(list)]}}}".utf8)
    }

    func store(directories: [URL]? = nil) throws -> NodePolicyStore {
        let log = try MeasurementLog([("executable", own)])
        return try NodePolicyStore(
            file: file, directories: directories ?? ledgers, rackId: rack, verifier: verifier,
            selfCheck: { $0.ownViolations(log) })
    }

    func refusal(_ store: NodePolicyStore, _ signed: SignedNodePolicy) throws -> AdminError {
        let before = store.state
        let error = try #require(throws: AdminError.self) { try store.apply(signed) }
        #expect(store.state == before, "a refused policy changed the policy in force")
        return error
    }

    @Test("the policy file is in force at start; a signed policy replaces it, is persisted, and survives a restart")
    func applyAndRestart() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let fileBytes = policy([own])
        try fileBytes.write(to: file)
        let node = try store()
        #expect(
            node.state
                == NodePolicyState(
                    source: .file, digest: Array(SHA256.hash(data: fileBytes)).hexString, mode: "enforce"))

        let both = policy([own, other])
        let signed = try alice.sign(policy: both, rackId: rack, version: 1)
        let after = try node.apply(signed)
        #expect(after.source == .operator && after.version == 1 && after.signedBy == "alice")
        #expect(after.digest == Array(SHA256.hash(data: both)).hexString)
        #expect(node.state == after)
        #expect(
            node.policy.softwareRootOfTrust?.violations(try MeasurementLog([("executable", other)])).isEmpty == true)
        for ledger in ledgers {
            let copy = try Data(contentsOf: ledger.appendingPathComponent(NodePolicyStore.fileName))
            #expect(try JSONDecoder().decode(SignedNodePolicy.self, from: copy) == signed)
        }
        // Applying it again changes nothing and succeeds.
        #expect(try node.apply(signed) == after)
        // A restart takes the signed copy, not the file (which still admits only the old software).
        let restarted = try store()
        #expect(restarted.state == after)
        #expect(try restarted.reloadFile() == nil, "the file was read although a signed policy is in force")
        #expect(restarted.state == after)
    }

    @Test("a dry run checks everything and changes nothing")
    func dryRun() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        let before = node.state
        let would = try node.apply(
            try alice.sign(policy: policy([own, other]), rackId: rack, version: 1), dryRun: true)
        #expect(would.version == 1)
        #expect(node.state == before)
        for ledger in ledgers {
            #expect(
                !FileManager.default.fileExists(atPath: ledger.appendingPathComponent(NodePolicyStore.fileName).path))
        }
        // And a dry run of a policy it would refuse is refused the same way.
        let error = try #require(throws: AdminError.self) {
            try node.apply(try alice.sign(policy: policy([other]), rackId: rack, version: 2), dryRun: true)
        }
        #expect(error.code == .policyRefused)
    }

    @Test("another rack's policy, a forged signature and altered contents are refused")
    func forgeries() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        let otherRack = RackId(bytes: Array(repeating: 9, count: 16))!
        let wrongRack = try refusal(node, try alice.sign(policy: policy([own]), rackId: otherRack, version: 1))
        #expect(wrongRack.code == .policyRefused && wrongRack.reason.contains("rack \(otherRack)"))

        let strangerCA = try ManufacturingCA.create(in: directory.appendingPathComponent("stranger-ca"))
        let mallory = try OperatorIdentity.create(
            in: directory.appendingPathComponent("mallory"), ca: strangerCA, name: "mallory")
        let forged = try refusal(node, try mallory.sign(policy: policy([own]), rackId: rack, version: 1))
        #expect(forged.code == .policyRefused && forged.reason.contains("signature does not verify"))

        var altered = try alice.sign(policy: policy([own]), rackId: rack, version: 1)
        altered.policy = policy([own, other])
        let tampered = try refusal(node, altered)
        #expect(tampered.code == .policyRefused && tampered.reason.contains("signature does not verify"))

        var renumbered = try alice.sign(policy: policy([own]), rackId: rack, version: 2)
        renumbered.version = 7
        #expect(try refusal(node, renumbered).reason.contains("signature does not verify"))

        var oversized = try alice.sign(
            policy: Data(count: SignedNodePolicy.maximumLength + 1), rackId: rack, version: 3)
        oversized.policy = Data(count: SignedNodePolicy.maximumLength + 1)
        #expect(try refusal(node, oversized).reason.contains("longer than"))
    }

    @Test("versions only go up: an older one is refused, and one version with other contents is refused")
    func versions() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        _ = try node.apply(try alice.sign(policy: policy([own, other]), rackId: rack, version: 2))
        let older = try refusal(node, try alice.sign(policy: policy([own]), rackId: rack, version: 1))
        #expect(older.reason.contains("never rolled back"))
        // A second operator of the same CA (its own journal) signs version 2 with other contents.
        let bob = try OperatorIdentity.create(in: directory.appendingPathComponent("bob"), ca: ca, name: "bob")
        let clash = try refusal(node, try bob.sign(policy: policy([own]), rackId: rack, version: 2))
        #expect(clash.reason.contains("other contents"))
        // Bob's version 3 is fine and names him.
        #expect(try node.apply(try bob.sign(policy: policy([own]), rackId: rack, version: 3)).signedBy == "bob")
    }

    @Test("a policy that does not admit this node's own software is refused in enforce mode, naming the rule")
    func selfExcluding() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        let error = try refusal(node, try alice.sign(policy: policy([other]), rackId: rack, version: 1))
        #expect(error.code == .policyRefused)
        #expect(error.reason.contains("own software") && error.reason.contains("executable"))
        // Permissive mode admits everyone, so it does not lock this node out.
        #expect(
            try node.apply(try alice.sign(policy: policy([other], mode: "permissive"), rackId: rack, version: 2)).mode
                == "permissive")
    }

    @Test("a signed policy this node cannot use is refused with the parser's code")
    func unusable() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        let typo = Data("{\"mode\":\"enforce\",\"softwareRootOfTrust\":{\"alow\":{}}}".utf8)
        let error = try refusal(node, try alice.sign(policy: typo, rackId: rack, version: 1))
        #expect(error.code == .policyRefused && error.reason.contains("NODE-POLICY-UNKNOWN-FIELD"))
        let notJSON = try refusal(node, try alice.sign(policy: Data("not json".utf8), rackId: rack, version: 2))
        #expect(notJSON.code == .policyRefused && notJSON.reason.contains("NODE-POLICY-SYNTAX"))
    }

    @Test("when no ledger directory takes the signed copy, nothing changes")
    func unwritable() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        // Regular files where the directories should be: every write fails, whoever runs the test.
        let blocked = [directory.appendingPathComponent("blocked-a"), directory.appendingPathComponent("blocked-b")]
        for path in blocked { try Data("x".utf8).write(to: path) }
        let node = try store(directories: blocked)
        let error = try refusal(node, try alice.sign(policy: policy([own, other]), rackId: rack, version: 1))
        #expect(error.code == .stateWrite && error.reason.contains("unchanged"))
        // One directory that takes it is enough.
        let mixed = try store(directories: [blocked[0], ledgers[0]])
        #expect(try mixed.apply(try alice.sign(policy: policy([own, other]), rackId: rack, version: 2)).version == 2)
    }

    @Test("signed copies that cannot be used stop the start instead of falling back to the file")
    func corruptCopies() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let signed = try alice.sign(policy: policy([own, other]), rackId: rack, version: 1)
        _ = try store().apply(signed)
        // One copy corrupt: the other is used.
        try Data("{\"garbage\":".utf8).write(to: ledgers[0].appendingPathComponent(NodePolicyStore.fileName))
        #expect(try store().state.version == 1)
        // Both corrupt: no start.
        try Data("{\"garbage\":".utf8).write(to: ledgers[1].appendingPathComponent(NodePolicyStore.fileName))
        let corrupt = try #require(throws: NodeAttestationPolicyError.self) { try store() }
        #expect(corrupt.code == .signed && corrupt.reason.contains("does not fall back"))
        // A copy for another rack, or signed by a stranger, is as unusable.
        let otherRack = RackId(bytes: Array(repeating: 9, count: 16))!
        let foreign = try alice.sign(policy: policy([own]), rackId: otherRack, version: 5)
        for ledger in ledgers {
            try JSONEncoder().encode(foreign).write(to: ledger.appendingPathComponent(NodePolicyStore.fileName))
        }
        let refused = try #require(throws: NodeAttestationPolicyError.self) { try store() }
        #expect(refused.code == .signed && refused.reason.contains("not signed for this rack"))
        // Removing the copies is the way back to the file.
        for ledger in ledgers {
            try FileManager.default.removeItem(at: ledger.appendingPathComponent(NodePolicyStore.fileName))
        }
        #expect(try store().state.source == .file)
    }

    @Test("the policy file is read again on request; a broken file leaves the policy in force")
    func reload() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        try policy([own]).write(to: file)
        let node = try store()
        let changed = policy([own, other])
        try changed.write(to: file)
        let state = try #require(try node.reloadFile())
        #expect(state.source == .file && state.digest == Array(SHA256.hash(data: changed)).hexString)
        #expect(
            node.policy.softwareRootOfTrust?.violations(try MeasurementLog([("executable", other)])).isEmpty == true)
        try Data("{".utf8).write(to: file)
        let error = try #require(throws: NodeAttestationPolicyError.self) { try node.reloadFile() }
        #expect(error.code == .syntax)
        #expect(node.state == state)
    }

    @Test("the operator journals policy versions per rack, apart from epochs")
    func journal() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        #expect(alice.highestSignedPolicyVersion(rackId: rack) == nil)
        _ = try alice.sign(policy: policy([own]), rackId: rack, version: 4)
        // The same version and contents again: the same signature's statement, no conflict.
        _ = try alice.sign(policy: policy([own]), rackId: rack, version: 4)
        let conflict = try #require(throws: SigningError.self) {
            try alice.sign(policy: policy([other]), rackId: rack, version: 4)
        }
        #expect(conflict.code == .conflicting && conflict.reason.contains("version 4"))
        #expect(alice.highestSignedPolicyVersion(rackId: rack) == 4)
        #expect(alice.hasSigned(policy: policy([own]), rackId: rack, version: 4))
        #expect(!alice.hasSigned(policy: policy([other]), rackId: rack, version: 4))
        #expect(!alice.hasSigned(policy: policy([own]), rackId: rack, version: 3))
        #expect(alice.highestSignedPolicyVersion(rackId: RackId(bytes: Array(repeating: 9, count: 16))!) == nil)
        #expect(alice.highestSignedEpoch == nil, "a policy version counted as an epoch")
        // The journal survives reopening.
        let reopened = try OperatorIdentity(directory: directory.appendingPathComponent("alice"))
        #expect(reopened.highestSignedPolicyVersion(rackId: rack) == 4)
    }

    @Test("the rollout reuses the version a node holds these contents under, else goes above every version")
    func rolloutVersion() {
        let digest = String(repeating: "a", count: 64)
        func held(_ version: UInt64?, _ digest: String) -> NodePolicyState {
            NodePolicyState(
                source: version == nil ? .file : .operator, version: version, digest: digest, mode: "enforce")
        }
        func version(_ held: [NodePolicyState], journal: UInt64?, holds: Bool = false) -> UInt64 {
            PolicyRollout.version(digest: digest, held: held, journal: journal, journalHolds: holds)
        }
        #expect(version([held(nil, "f")], journal: nil) == 1)
        #expect(version([held(nil, "f")], journal: 6) == 7)
        #expect(version([held(3, digest), held(2, "b")], journal: 3) == 3)
        #expect(version([held(3, digest), held(5, "b")], journal: 5) == 6)
        // Signed by a run that applied nothing: the same version again.
        #expect(version([held(1, "b")], journal: 2, holds: true) == 2)
        #expect(version([held(1, "b")], journal: 2, holds: false) == 3)
        #expect(version([held(4, "b")], journal: 2, holds: true) == 5)
    }
}
