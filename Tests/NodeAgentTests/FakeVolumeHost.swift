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
    var keyedSchemes: [String: DiskKeyScheme] = [:]
    /// The node's platform id (in its keys' derivation).
    static let platform = PlatformId(part: "913-0000019", serial: "sn-0001")
    var failWrites = false

    init(rack: RackId = RackId(bytes: Array(0..<16))!, latest: Epoch) {
        self.rack = rack
        self.latest = latest
    }

    static func secret(_ epoch: Epoch) -> RackSecret {
        RackSecret(SecretBytes([UInt8](repeating: UInt8(truncatingIfNeeded: epoch.value) | 0x80, count: 32)))!
    }

    /// The disk key this node derives for `disk` at `epoch` under `scheme`.
    nonisolated func key(_ disk: String, _ epoch: Epoch, _ scheme: DiskKeyScheme = .current) -> SecretBytes {
        DiskKey(
            secret: Self.secret(epoch), epoch: epoch, rackId: rack, platform: Self.platform, diskId: Array(disk.utf8),
            scheme: scheme
        ).key
    }

    /// The keyrack token `luksDump` should show.
    nonisolated func token(
        _ id: Int, epoch: UInt64, keyslot: Int, disk: String = "data0", scheme: DiskKeyScheme = .current
    ) -> KeyrackTokenSummary {
        KeyrackTokenSummary(
            id: id, epoch: epoch, keyslots: ["\(keyslot)"], rackId: rack.description, diskId: disk,
            version: "\(scheme.rawValue)")
    }

    func volumeKey(disk: String, key: DiskKeyVersion?) async throws(VolumeError) -> DiskKey {
        let wanted = key?.epoch ?? latest
        guard wanted <= latest else { throw VolumeError(.locked, "epoch \(wanted) is not committed") }
        return DiskKey(
            secret: Self.secret(wanted), epoch: wanted, rackId: rack, platform: Self.platform,
            diskId: Array(disk.utf8), scheme: key?.scheme ?? .current)
    }

    func recordVolume(disk: String, plan: RekeyPlan?, keyed version: DiskKeyVersion?) async throws(VolumeError) {
        guard !failWrites else { throw VolumeError(.stateWrite, "the test refuses the write") }
        plans[disk] = plan
        if let version {
            keyed[disk] = version.epoch
            keyedSchemes[disk] = version.scheme
        }
    }

    func commit(_ epoch: Epoch) { latest = epoch }
    func refuseWrites(_ refuse: Bool) { failWrites = refuse }
}
