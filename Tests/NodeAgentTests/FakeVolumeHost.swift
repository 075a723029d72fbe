import Foundation
import KeyrackCore
import KeyrackTestSupport
import SecretSharing
import TrustQuorum

@testable import NodeAgent

/// A node as the volume manager sees it: rack secrets by epoch up to the
/// latest commit, and the agent state's re-key progress in memory.
actor FakeVolumeHost: VolumeHost {
    let rack: RackId
    var latest: Epoch
    var plans: [String: RekeyPlan] = [:]
    var keyed: [String: Epoch] = [:]
    var failWrites = false

    init(rack: RackId = RackId(bytes: Array(0..<16))!, latest: Epoch) {
        self.rack = rack
        self.latest = latest
    }

    static func secret(_ epoch: Epoch) -> RackSecret {
        RackSecret(SecretBytes([UInt8](repeating: UInt8(truncatingIfNeeded: epoch.value) | 0x80, count: 32)))!
    }

    /// The disk key a node of this rack derives for `disk` at `epoch`.
    nonisolated func key(_ disk: String, _ epoch: Epoch) -> SecretBytes {
        DiskKey(secret: Self.secret(epoch), epoch: epoch, rackId: rack, diskId: Array(disk.utf8)).key
    }

    /// The keyrack token `luksDump` should show.
    nonisolated func token(_ id: Int, epoch: UInt64, keyslot: Int, disk: String = "data0") -> KeyrackTokenSummary {
        KeyrackTokenSummary(id: id, epoch: epoch, keyslots: ["\(keyslot)"], rackId: rack.description, diskId: disk)
    }

    func volumeKey(disk: String, epoch: Epoch?) async throws(VolumeError) -> DiskKey {
        let wanted = epoch ?? latest
        guard wanted <= latest else { throw VolumeError(.locked, "epoch \(wanted) is not committed") }
        return DiskKey(secret: Self.secret(wanted), epoch: wanted, rackId: rack, diskId: Array(disk.utf8))
    }

    func recordVolume(disk: String, plan: RekeyPlan?, keyedEpoch: Epoch?) async throws(VolumeError) {
        guard !failWrites else { throw VolumeError(.stateWrite, "the test refuses the write") }
        plans[disk] = plan
        if let keyedEpoch { keyed[disk] = keyedEpoch }
    }

    func commit(_ epoch: Epoch) { latest = epoch }
    func refuseWrites(_ refuse: Bool) { failWrites = refuse }
}
