import KeyrackCore
import TrustQuorum

/// The operator of the in-memory tests (state machines, cores, simulator):
/// one Ed25519 key that every test node pins, and a forger's key that
/// nobody pins.
public enum TestOperator {
    /// The operator's key.
    public static let key: RawOperatorKey = {
        var random = SeededRandomSource(seed: 0x6F70)
        return RawOperatorKey(using: &random)
    }()

    /// A key nobody pins: what a forger signs with.
    public static let forger: RawOperatorKey = {
        var random = SeededRandomSource(seed: 0x666F)
        return RawOperatorKey(using: &random)
    }()

    /// What test nodes pin.
    public static var verifier: PinnedOperatorKeys { key.verifier }

    /// `request` as a ticket for `coordinator`, signed by `signer`.
    public static func ticket(
        _ request: ReconfigureRequest, coordinator: PlatformId, by signer: RawOperatorKey = key
    ) -> SignedTicket {
        let ticket = ReconfigureTicket(request, coordinator: coordinator)
        return SignedTicket(ticket, signature: try! signer.sign(.ticket(ticket)))
    }

    /// `configuration` with `signer`'s commit signature.
    public static func signed(_ configuration: Configuration, by signer: RawOperatorKey = key) -> SignedConfiguration {
        SignedConfiguration(configuration, signature: try! signer.sign(.commit(configuration)))
    }
}
