import Foundation
import KeyrackCore
import SecretSharing
import TrustQuorum

/// The node's side of its LUKS2 volumes: it derives their keys (from the
/// rack secret of any committed epoch, older ones through the chain) and
/// keeps their re-key progress in the agent state; the admin commands that
/// concern volumes are answered here.
extension NodeRuntime: VolumeHost {
    /// Answers the admin commands that concern LUKS2 volumes; nil for every other command.
    func handleVolumeCommand(_ command: AdminCommand) async -> AdminResponse? {
        switch command {
        case .diskRekeyed(let disk, _) where configuration.volumes.contains(where: { $0.disk == disk }):
            return AdminResponse(
                error: AdminError(
                    code: "NODE-VOLUME-BOUND",
                    reason: "'\(disk)' is a LUKS2 volume: the node re-keys it itself after every commit"))
        case .luksBind, .luksFormat:
            if let halted { return AdminResponse(error: AdminError(.halted, halted)) }
            do throws(VolumeError) {
                let status: VolumeStatus
                if case .luksBind(let disk, let existingKey) = command {
                    status = try await volumes.bind(disk: disk, existingKey: existingKey)
                } else if case .luksFormat(let disk) = command {
                    status = try await volumes.format(disk: disk)
                } else {
                    return nil
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
