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

extension NIOSSLCertificate {
    /// The same certificate for BoringSSL.
    convenience init(_ certificate: Certificate) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        try self.init(bytes: serializer.serializedBytes, format: .der)
    }
}
