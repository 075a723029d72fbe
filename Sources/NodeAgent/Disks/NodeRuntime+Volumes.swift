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
        case .luksBind(let disk, let existingKey):
            return await volumeAnswer { () throws(VolumeError) in
                try await volumes.bind(disk: disk, existingKey: existingKey)
            }
        case .luksFormat(let disk):
            return await volumeAnswer { () throws(VolumeError) in try await volumes.format(disk: disk) }
        default:
            return nil
        }
    }

    /// The answer to a volume operation: refused while halted, else its status or its error.
    private func volumeAnswer(_ operation: () async throws(VolumeError) -> VolumeStatus) async -> AdminResponse {
        if let halted { return AdminResponse(error: AdminError(.halted, halted)) }
        do throws(VolumeError) {
            return AdminResponse(volume: try await operation())
        } catch {
            return AdminResponse(error: error.adminError)
        }
    }
}
