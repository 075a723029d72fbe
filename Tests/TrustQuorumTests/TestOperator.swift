import KeyrackCore
import KeyrackTestSupport
import SecretSharing

@testable import TrustQuorum

// The test operator (KeyrackTestSupport) for the state-machine tests. The
// overloads below keep the tests written in the control plane's terms (a
// request, an epoch, a configuration) while every call goes through the
// signed API, signed by the test operator's key.
extension TestOperator {
    /// A committed configuration of `epoch` with `members` (dummy digests),
    /// signed: what tells a node left out of it that it was removed.
    static func exclusion(rack: RackId, epoch: Epoch, members: [PlatformId], by signer: RawOperatorKey = key)
        -> SignedConfiguration
    {
        let digests = Dictionary(
            uniqueKeysWithValues: members.map { ($0, ShareDigest(bytes: Array(repeating: 1, count: 32))!) })
        let config = try! Configuration(
            rackId: rack, epoch: epoch, coordinator: members.min()!, members: digests, threshold: 2,
            encryptedRackSecrets: nil)
        return signed(config, by: signer)
    }

    /// A signature that verifies over nothing this rack decided.
    static let junk = OperatorSignature(credential: key.publicKey, signature: Array(repeating: 7, count: 64))!
}

extension Node {
    /// A node pinning ``TestOperator/key``.
    init(
        platformId: PlatformId, rackId: RackId, persistentState: PersistentState = .empty,
        options: NodeOptions = NodeOptions()
    ) {
        self.init(
            platformId: platformId, rackId: rackId, persistentState: persistentState, options: options,
            operatorVerifier: TestOperator.verifier)
    }

    /// Coordinates `request` under a ticket the test operator signed for this node.
    mutating func reconfigure(
        _ request: ReconfigureRequest, using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        try reconfigure(TestOperator.ticket(request, coordinator: platformId), using: &random)
    }

    /// Coordinates the upgrade `request` under a ticket the test operator signed for this node.
    mutating func upgradeFromLrtq(
        _ request: UpgradeFromLrtqRequest, using random: inout some SecureRandomSource
    ) throws(ReconfigureError) {
        let ticket = ReconfigureTicket(upgrade: request, coordinator: platformId)
        try upgradeFromLrtq(
            SignedTicket(ticket, signature: try! TestOperator.key.sign(.ticket(ticket))), using: &random)
    }

    /// Commits `epoch` with the test operator's signature over the prepared configuration.
    mutating func commit(_ epoch: Epoch) throws(CommitError) {
        let signature = persistentState.configurations[epoch].map { TestOperator.signed($0).signature }
        try commit(epoch, signature: signature ?? TestOperator.junk)
    }

    /// Commits `configuration` with the test operator's signature.
    mutating func prepareAndCommit(_ configuration: Configuration) throws(CommitError) {
        try prepareAndCommit(TestOperator.signed(configuration))
    }
}
