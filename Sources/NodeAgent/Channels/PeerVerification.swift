import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

/// Runs the peer-certificate verification tasks on Dispatch's threads,
/// outside Swift's cooperative pool.
final class VerificationExecutor: TaskExecutor {
    static let shared = VerificationExecutor()
    private let queue = DispatchQueue(label: "keyrack.peer-verification")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// Why the verification callback refused the peer of one connection, for
/// the error the connection fails with.
final class PeerRefusal: Sendable {
    private let reason = Mutex<String?>(nil)
    private let certificate = Mutex(false)

    func record(_ text: String) { reason.withLock { $0 = text } }
    var recorded: String? { reason.withLock { $0 } }

    /// The peer's certificate reached the verification callback.
    func certificateArrived() { certificate.withLock { $0 = true } }
    var hasCertificate: Bool { certificate.withLock { $0 } }
}

/// Who the TLS verification callback admits, kept current by the node:
/// the platforms its core admits (``AgentCore/admission``: membership) and
/// the device certificates denied by serial number. A peer outside it fails
/// the handshake, before any frame. Without an admission set (a listener
/// that is not a node's, in tests) every verified device is admitted.
public final class PeerAdmission: Sendable {
    private let state: Mutex<(admission: Admission?, denied: Set<String>)>

    /// An admission with `denied` serial numbers (``NodeConfiguration/deniedSerials``) and no set yet.
    public init(denied: Set<String> = []) {
        state = Mutex((nil, denied))
    }

    /// The node's current admission set.
    public func update(_ admission: Admission) { state.withLock { $0.admission = admission } }

    /// Replaces the denied serial numbers (on SIGHUP).
    public func deny(_ serials: Set<String>) { state.withLock { $0.denied = serials } }

    /// The denied serial numbers.
    public var denied: Set<String> { state.withLock { $0.denied } }

    /// Why `platform`'s certificate with `serial` is refused, or `nil` if it is admitted.
    public func refusal(platform: PlatformId, serial: String) -> String? {
        state.withLock { state in
            if state.denied.contains(serial) { return "the device certificate \(serial) of \(platform) is denied" }
            if let admission = state.admission, !admission.admits(platform) {
                return "\(platform) is not a member of this node's rack configuration"
            }
            return nil
        }
    }
}

extension NIOSSLCertificate {
    /// The same certificate for BoringSSL.
    convenience init(_ certificate: Certificate) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        try self.init(bytes: serializer.serializedBytes, format: .der)
    }
}
