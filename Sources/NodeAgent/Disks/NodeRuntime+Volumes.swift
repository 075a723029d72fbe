import Foundation
import KeyrackCore
import SecretSharing
import TrustQuorum

/// The node's side of its LUKS2 volumes: it derives their keys (from the
/// rack secret of any committed epoch, older ones through the chain) and
/// keeps their re-key progress in the agent state; the admin requests that
/// concern volumes are answered here.
extension NodeRuntime: VolumeHost {
    /// Answers the admin requests that concern LUKS2 volumes; nil for every other request.
    func handleVolumeRequest(_ request: AdminRequest) async -> AdminResponse? {
        let bound = request.disk.map { disk in configuration.volumes.contains { $0.disk == disk } } ?? false
        switch request.operation {
        case .diskRekeyed where bound:
            return AdminResponse(
                error: AdminError(
                    code: "NODE-VOLUME-BOUND",
                    reason: "'\(request.disk ?? "")' is a LUKS2 volume: the node re-keys it itself after every commit"))
        case .luksBind, .luksFormat:
            if let halted { return AdminResponse(error: AdminError(.halted, halted)) }
            guard let disk = request.disk else {
                return AdminResponse(error: AdminError(.request, "the request lacks 'disk'"))
            }
            do throws(VolumeError) {
                let status: VolumeStatus
                if request.operation == .luksBind {
                    guard var decoded = request.existingKey.flatMap({ Data(base64Encoded: $0) }), !decoded.isEmpty
                    else {
                        return AdminResponse(
                            error: AdminError(
                                code: "NODE-ADMIN-REQUEST", reason: "the request lacks 'existingKey' (base64)"))
                    }
                    let existing = SecretBytes(decoded)
                    decoded.resetBytes(in: 0..<decoded.count)
                    status = try await volumes.bind(disk: disk, existingKey: existing)
                } else {
                    status = try await volumes.format(disk: disk)
                }
                return AdminResponse(volume: status)
            } catch {
                return AdminResponse(error: error.adminError)
            }
        default:
            return nil
        }
    }
}
