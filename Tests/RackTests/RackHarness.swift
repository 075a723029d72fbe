import Foundation
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// Runs `body` with a fresh local rack of `count` node processes (none
/// started), and always stops them and removes the rack's files afterwards.
/// On failure the nodes' log tails are attached to the test's output.
func withRack<T>(
    count: Int,
    keyType: DeviceKeyType = .ed25519,
    policy: Data? = nil,
    evidence: String = "rot",
    _ body: (LocalRack) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-rack-\(UUID().uuidString)")
    let rack = try LocalRack(
        directory: directory,
        executable: try keyrackExecutable().path,
        count: count,
        keyType: keyType,
        policy: try policy ?? allowingPolicy(),
        evidence: evidence
    )
    do {
        let result = try await body(rack)
        await rack.destroy()
        return result
    } catch {
        for member in rack.members {
            print("--- \(member.platform) ---\n\(rack.logTail(member.index, lines: 12))")
        }
        await rack.destroy()
        throw error
    }
}

/// An attestation policy (enforced) admitting the software-RoT evidence of
/// the `keyrack` executable under test and nothing else.
func allowingPolicy() throws -> Data {
    let keyrack = try keyrackExecutable().path
    let log = try MeasurementLog.current(
        files: [MeasuredFile(name: MeasuredFile.executable.name, path: keyrack)],
        cacheDirectory: FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-test-measurements")
    )
    return Data(NodeAttestationPolicy.json(allowing: log).utf8)
}

/// Starts `indices` and sets the rack up over them with threshold `k`.
@discardableResult
func setUp(_ rack: LocalRack, _ indices: [Int], threshold k: Int? = nil) async throws -> Configuration {
    for index in indices { try rack.launch(index) }
    for index in indices { try await rack.waitUntilAnswering(index) }
    let committed = try await RackOperator(sockets: rack.sockets(indices)).run(.initialize, threshold: k)
    try await rack.waitUntil(indices, "unlocked") { $0.unlockedEpoch == committed.epoch }
    return committed
}

/// Node `index`'s key for `disk` (at `epoch`, default the latest committed), in hex.
func diskKey(_ rack: LocalRack, _ index: Int, disk: String = "data0", epoch: Epoch? = nil) async throws -> String {
    let response = try await AdminSocket.perform(
        AdminRequest(.diskKey, epoch: epoch, disk: disk),
        path: rack.members[index].socket
    )
    return try #require(response.key)
}
