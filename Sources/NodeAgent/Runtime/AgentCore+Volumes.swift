import KeyrackCore
import Logging
import TrustQuorum

// What the volume manager asks of the node: keys of bound volumes, and
// writing their re-key progress before each step.

extension AgentCore {
    // MARK: - LUKS2 volumes

    /// The disk key of `disk` at `key` (nil: the latest committed epoch's,
    /// current scheme), for a bound volume; refused while the node is
    /// halted, expunged or locked.
    public mutating func volumeKey(disk: String, key: DiskKeyVersion?) throws(VolumeError) -> DiskKey {
        if let halted { throw VolumeError(.locked, "this node has halted: \(halted)") }
        do {
            return try derivedKey(disk: disk, epoch: key?.epoch, scheme: key?.scheme ?? .current)
        } catch {
            throw VolumeError(.locked, error.reason)
        }
    }

    /// Records a volume's re-key progress (`plan`, nil when none is under
    /// way) and the key it is keyed under. Returns the agent state to write
    /// now, before the step it precedes (nil: nothing changed); if the write
    /// fails, ``restoreAgentState(_:)`` takes it back.
    public mutating func recordVolume(disk: String, plan: RekeyPlan?, keyed: DiskKeyVersion?) -> AgentState? {
        var next = agentState
        next.rekeys[disk] = plan
        if let keyed { next.setKeyed(disk, keyed) }
        guard next != agentState else { return nil }
        next.advanceGeneration()
        agentState = next
        return next
    }

    /// Takes back a ``recordVolume(disk:plan:keyed:)`` whose write failed.
    public mutating func restoreAgentState(_ state: AgentState) { agentState = state }
}
