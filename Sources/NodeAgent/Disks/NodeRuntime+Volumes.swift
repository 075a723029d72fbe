import Foundation
import SecretSharing
import TrustQuorum

/// The node's side of its LUKS2 volumes: it derives their keys (from the
/// rack secret of any committed epoch, older ones through the chain) and
/// keeps their re-key progress in the agent state; the admin requests that
/// concern volumes are answered here.
extension NodeRuntime: VolumeHost {
    public func volumeKey(disk: String, epoch: Epoch?) async throws(VolumeError) -> DiskKey {
        if let halted { throw VolumeError(.locked, "this node has halted: \(halted)") }
        if let expunged = node.persistentState.expunged {
            throw VolumeError(.locked, "this node was removed from the rack at epoch \(expunged.epoch)")
        }
        guard let latest = node.persistentState.latestCommittedEpoch, unlockedEpoch == latest else {
            throw VolumeError(.locked, "the rack secret is not loaded yet (waiting for shares)")
        }
        let wanted = epoch ?? latest
        do {
            guard let secret = try node.loadRackSecret(wanted) else {
                throw VolumeError(.locked, "the rack secret of epoch \(wanted) is not loaded yet")
            }
            return DiskKey(secret: secret, epoch: wanted, rackId: configuration.rackId, diskId: Array(disk.utf8))
        } catch let error as VolumeError {
            throw error
        } catch {
            throw VolumeError(.locked, "the rack secret of epoch \(wanted) is not available: \(error)")
        }
    }

    public func recordVolume(disk: String, plan: RekeyPlan?, keyedEpoch: Epoch?) async throws(VolumeError) {
        let before = agentState
        agentState.rekeys[disk] = plan
        if let keyedEpoch { agentState.disks[disk] = keyedEpoch }
        guard agentState != before else { return }
        if let failure = saveAgentState() {
            agentState = before
            throw VolumeError(.stateWrite, failure.reason)
        }
    }

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
            if let halted { return AdminResponse(error: AdminError(code: "NODE-HALTED", reason: halted)) }
            guard let disk = request.disk else {
                return AdminResponse(error: AdminError(code: "NODE-ADMIN-REQUEST", reason: "the request lacks 'disk'"))
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
