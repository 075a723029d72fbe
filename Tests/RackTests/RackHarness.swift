import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// At most this many racks run at once in the test process (a nested rack
/// shares its parent's slot). Every node process hashes the executable at
/// start and the whole suite shares two cores: with every rack test at once,
/// nodes took over 20 s to answer; a few at a time, each rack test takes
/// seconds and the suite is no slower.
actor RackSlots {
    static let shared = RackSlots(limit: 3)
    @TaskLocal static var holding = false

    private let limit: Int
    private var inUse = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = limit }

    func acquire() async {
        if inUse < limit {
            inUse += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            inUse -= 1
        } else {
            waiting.removeFirst().resume()  // the slot passes on
        }
    }
}

/// Runs `body` with a fresh local rack of `count` node processes (none
/// started), and always stops them and removes the rack's files afterwards.
/// On failure the nodes' log tails are attached to the test's output.
func withRack<T>(
    count: Int,
    keyType: DeviceKeyType = .ed25519,
    policy: Data? = nil,
    evidence: String = "rot",
    network: RackNetwork = RackNetwork(),
    _ body: (LocalRack) async throws -> T
) async throws -> T {
    if RackSlots.holding {
        return try await withRackInSlot(
            count: count, keyType: keyType, policy: policy, evidence: evidence, network: network, body)
    }
    await RackSlots.shared.acquire()
    do {
        let result = try await RackSlots.$holding.withValue(true) {
            try await withRackInSlot(
                count: count, keyType: keyType, policy: policy, evidence: evidence, network: network, body)
        }
        await RackSlots.shared.release()
        return result
    } catch {
        await RackSlots.shared.release()
        throw error
    }
}

/// How a test rack's nodes are networked: all on loopback (optionally with
/// network admin listeners and metrics), or each on a host of its own.
struct RackNetwork {
    var hosts: HostLab?
    var adminListen = false
    var metrics = false
    var allowNetworkDiskKey = false
}

private func withRackInSlot<T>(
    count: Int,
    keyType: DeviceKeyType,
    policy: Data?,
    evidence: String,
    network: RackNetwork,
    _ body: (LocalRack) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-rack-\(UUID().uuidString)")
    let rack = try LocalRack(
        directory: directory,
        executable: try keyrackExecutable().path,
        count: count,
        keyType: keyType,
        policy: try policy ?? allowingPolicy(),
        evidence: evidence,
        hosts: network.hosts,
        adminListen: network.adminListen,
        metrics: network.metrics,
        allowNetworkDiskKey: network.allowNetworkDiskKey
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
    let committed = try await rack.rackOperator(indices).run(.initialize, threshold: k)
    try await rack.waitUntil(indices, "unlocked") { $0.unlockedEpoch == committed.epoch }
    return committed
}

/// Node `index`'s check value of the rack secret it unlocked (equal on nodes that hold the same secret).
func secretCheck(_ rack: LocalRack, _ index: Int) async throws -> String {
    try #require(await rack.statuses([index])[0]?.secretCheck)
}

/// Checks that `indices` hold one rack secret (one check value) and that
/// each derives its own key for data0 (keys bound to the platform id);
/// returns the check value.
@discardableResult
func expectSameSecret(_ rack: LocalRack, _ indices: [Int]) async throws -> String {
    var checks: Set<String> = []
    var keys: Set<String> = []
    for index in indices {
        checks.insert(try await secretCheck(rack, index))
        keys.insert(try await diskKey(rack, index))
    }
    #expect(checks.count == 1)
    #expect(keys.count == indices.count)
    return try #require(checks.first)
}

/// Node `index`'s key for `disk` (at `epoch`, default the latest committed), in hex.
func diskKey(_ rack: LocalRack, _ index: Int, disk: String = "data0", epoch: Epoch? = nil) async throws -> String {
    let response = try await AdminSocket.perform(
        AdminRequest(.diskKey, epoch: epoch, disk: disk),
        path: rack.members[index].socket
    )
    return try #require(response.key)
}
