import Crypto
import TrustQuorum

/// What a node's attestation evidence is bound to: both fresh nonces of the
/// exchange and both endpoints' certificates, in client/server order.
///
/// The binding a sender puts in its evidence's report data is
///
/// ```
/// SHA-256( "keyrack node attestation binding v1" ‖ 0x00
///        ‖ client nonce (32) ‖ server nonce (32)
///        ‖ u32 len ‖ client leaf certificate DER ‖ u32 len ‖ server leaf certificate DER
///        ‖ sender role (1 = client, 2 = server)
///        ‖ u16 len ‖ sender part number ‖ u16 len ‖ sender serial number )
/// ```
///
/// (lengths big-endian, strings UTF-8), so both ends compute the same value
/// for the same sender, and evidence made for one session, one pair of
/// nodes or one direction does not verify in another: the verifier's own
/// fresh nonce is in it (no replay), its own certificate is in it (no relay
/// to a third node), and the sender's role is in it (no reflection).
///
/// The limit: swift-nio-ssl 2.37 offers no TLS exporter (RFC 5705 / 8446
/// §7.5), so the binding names the channel by its endpoints' certificates,
/// not by its session keys. Someone who holds the private keys of *both*
/// certificates could open two sessions and splice a genuine node's
/// evidence from one into the other; anyone with fewer keys cannot. Device
/// keys never leave their roots of trust, so that takes two compromised
/// roots of trust, and with an exporter the binding should move to it.
public struct ChannelBinding: Sendable, Hashable {
    /// The domain-separation label.
    public static let label = "keyrack node attestation binding v1"
    /// The size of each nonce.
    public static let nonceSize = 32

    /// The client's nonce.
    public let clientNonce: [UInt8]
    /// The server's nonce.
    public let serverNonce: [UInt8]
    /// The client's leaf certificate, DER.
    public let clientCertificateDER: [UInt8]
    /// The server's leaf certificate, DER.
    public let serverCertificateDER: [UInt8]

    /// The binding of one exchange.
    public init(
        clientNonce: [UInt8], serverNonce: [UInt8], clientCertificateDER: [UInt8], serverCertificateDER: [UInt8]
    ) {
        self.clientNonce = clientNonce
        self.serverNonce = serverNonce
        self.clientCertificateDER = clientCertificateDER
        self.serverCertificateDER = serverCertificateDER
    }

    /// The binding for this node's side of `channel`: our nonce and the
    /// peer's, put in client/server order.
    init(channel: PeerChannel, ourNonce: [UInt8], peerNonce: [UInt8]) {
        switch channel.role {
        case .client:
            self.init(
                clientNonce: ourNonce, serverNonce: peerNonce, clientCertificateDER: channel.localCertificateDER,
                serverCertificateDER: channel.peerCertificateDER)
        case .server:
            self.init(
                clientNonce: peerNonce, serverNonce: ourNonce, clientCertificateDER: channel.peerCertificateDER,
                serverCertificateDER: channel.localCertificateDER)
        }
    }

    /// The 32-byte value evidence from `sender`, the `role` end, must carry.
    public func value(sender: PlatformId, role: PeerChannel.Role) -> [UInt8] {
        var hash = SHA256()
        hash.update(data: Array(Self.label.utf8) + [0])
        hash.update(data: clientNonce)
        hash.update(data: serverNonce)
        for der in [clientCertificateDER, serverCertificateDER] {
            hash.update(data: bigEndian(UInt32(der.count)))
            hash.update(data: der)
        }
        hash.update(data: [role.rawValue])
        for field in [sender.part, sender.serial] {
            let bytes = Array(field.utf8)
            hash.update(data: bigEndian(UInt16(truncatingIfNeeded: bytes.count)))
            hash.update(data: bytes)
        }
        return Array(hash.finalize())
    }
}

/// `value` as big-endian bytes.
func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}
