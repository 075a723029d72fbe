import Foundation
import NIOCore
import Testing
import TrustQuorum

@testable import NodeAgent

@Suite("Attestation frames and the channel binding")
struct AttestationFrameTests {
    static let log = try! MeasurementLog([
        ("executable", Array(repeating: 1, count: 32)), ("config", Array(repeating: 2, count: 32)),
    ])

    @Test(
        "every frame parses back to itself",
        arguments: [
            AttestationFrame.nonce(Array(repeating: 3, count: 32)),
            .evidence(
                .softwareRootOfTrust(.init(reportData: Array(repeating: 4, count: 32), log: log, signature: [5, 6]))),
            .evidence(.tdxQuote([7, 8, 9])),
            .accepted,
            .refused("measurement 'executable': not named by the policy"),
            .aborted("timed out waiting for this node's nonce"),
        ])
    func roundTrip(frame: AttestationFrame) throws {
        #expect(try AttestationFrame(parsing: frame.buffer) == frame)
        var longer = frame.buffer
        longer.writeInteger(UInt8(0))
        #expect((#expect(throws: PeerChannelError.self) { try AttestationFrame(parsing: longer) })?.code == .malformed)
        let bytes = Array(buffer: frame.buffer)
        let truncated = #expect(throws: PeerChannelError.self) {
            try AttestationFrame(parsing: ByteBuffer(bytes: bytes.dropLast()))
        }
        #expect(truncated?.code == .malformed)
    }

    @Test("a refusal reason is cut to 512 bytes and loses its control characters")
    func refusalCleaned() throws {
        let frame = AttestationFrame.refused("line\none\u{1b}[31m" + String(repeating: "x", count: 1000))
        guard case .refused(let reason) = try AttestationFrame(parsing: frame.buffer) else {
            Issue.record("not a refusal")
            return
        }
        #expect(reason.utf8.count == 512 && reason.hasPrefix("line one [31m"))
    }

    @Test("both ends compute the same binding; the nonces, certificates, role and sender each change it")
    func binding() {
        let a = PlatformId(part: "p", serial: "A")
        let base = ChannelBinding(
            clientNonce: Array(repeating: 1, count: 32), serverNonce: Array(repeating: 2, count: 32),
            clientCertificateDER: [3], serverCertificateDER: [4])
        let value = base.value(sender: a, role: .client)
        #expect(value.count == 32)
        let variants = [
            ChannelBinding(
                clientNonce: Array(repeating: 9, count: 32), serverNonce: base.serverNonce,
                clientCertificateDER: [3], serverCertificateDER: [4]
            ).value(sender: a, role: .client),
            ChannelBinding(
                clientNonce: base.clientNonce, serverNonce: base.serverNonce, clientCertificateDER: [4],
                serverCertificateDER: [3]
            ).value(sender: a, role: .client),
            base.value(sender: a, role: .server),
            base.value(sender: PlatformId(part: "p", serial: "B"), role: .client),
            base.value(sender: PlatformId(part: "pA", serial: ""), role: .client),
        ]
        #expect(!variants.contains(value))
        #expect(Set(variants).count == variants.count)
    }
}
