import Foundation
import KeyrackLab
import KeyrackTestSupport
import NodeAgent
import Testing
import TrustQuorum

/// Runs `body` with a rack of `count` node processes, each on a host of its
/// own (a network namespace on 10.77.0.0/24), and an operator host `op` at
/// .2. The namespaces, their links and the processes are removed when it
/// ends, pass or fail. Needs root and iproute2: without them it fails,
/// saying which.
func withHostRack<T>(
    count: Int, metrics: Bool = false,
    _ body: (LocalRack, HostLab, HostLab.Host) async throws -> T
) async throws -> T {
    let missing = HostLab.requirements()
    try #require(missing == nil, "\(missing ?? ""): .ci/run runs as root with iproute2 installed")
    let lab = try HostLab()
    defer { lab.destroy() }
    let operatorHost = try lab.addHost("op", octet: 2)
    return try await withRack(count: count, network: RackNetwork(hosts: lab, metrics: metrics)) { rack in
        try await body(rack, lab, operatorHost)
    }
}

/// Runs `keyrack arguments` on `host`, to completion.
func keyrack(on host: HostLab.Host, _ lab: HostLab, _ arguments: [String]) async throws -> (
    status: Int32, output: String, errors: String
) {
    let (ip, wrapped) = lab.command(in: host, try keyrackExecutable().path, arguments)
    return try await runToCompletion(URL(fileURLWithPath: ip), wrapped)
}

/// `keyrack rack <command> --nodes <the nodes' addresses> --operator <the rack's operator>` on `host`.
func rackCommand(
    _ rack: LocalRack, _ lab: HostLab, on host: HostLab.Host, _ command: [String], nodes: [Int]? = nil
) async throws -> (status: Int32, output: String, errors: String) {
    try await keyrack(
        on: host, lab,
        ["rack"] + command + [
            "--nodes", rack.endpoints(nodes).joined(separator: ","), "--operator", rack.operatorDirectory.path,
        ])
}

@Suite("A rack across hosts: nodes in network namespaces, the operator on a host of its own")
struct HostRackTests {
    @Test(
        "set up, full restart, a rotation with a minority partitioned, unlock while partitioned, heal and catch up"
    )
    func partitionedRotation() async throws {
        try await withHostRack(count: 5, metrics: true) { rack, lab, operatorHost in
            let all = Array(0..<5)
            for index in all { try rack.launch(index) }
            for index in all { try await rack.waitUntilAnswering(index) }
            let setUp = try await rackCommand(rack, lab, on: operatorHost, ["init", "--threshold", "3"])
            #expect(setUp.status == 0, "\(setUp.output)\(setUp.errors)")
            #expect(setUp.output.contains("done: epoch 1, 5 members, threshold 3"))
            let up = try await rack.waitUntil(all, "unlocked at epoch 1") {
                $0.unlockedEpoch == Epoch(1) && $0.connected.count == 4
            }
            // Every node listens on its own host's address, and so do its peers.
            for (index, status) in zip(all, up) {
                #expect(status.listen == "10.77.0.\(LocalRack.firstNodeOctet + index):\(LocalRack.hostPorts.peers)")
            }
            let check = try await expectSameSecret(rack, all)

            // A disk key does not leave the machine unless the node allows it.
            let key = try await keyrack(
                on: operatorHost, lab,
                [
                    "node", "disk-key", "--admin", rack.endpoints([0])[0], "--operator", rack.operatorDirectory.path,
                    "--disk", "data0",
                ])
            #expect(key.status != 0)
            #expect(key.errors.contains("NODE-ADMIN-FORBIDDEN"))
            #expect(key.output.isEmpty)

            // Full restart: the rack unlocks itself over the network.
            await rack.stopAll()
            for index in all { try rack.launch(index) }
            try await rack.waitUntil(all, "unlocked after a full restart") { $0.unlockedEpoch == Epoch(1) }
            #expect(try await secretCheck(rack, 3) == check)

            // Node 5's host is cut off; the rotation commits with K + Z = 4 reachable, and says so.
            let cut = try #require(rack.members[4].host)
            try lab.partition(cut)
            let rotated = try await rackCommand(rack, lab, on: operatorHost, ["rotate", "--wait-for-down", "1"])
            #expect(rotated.status == 0, "\(rotated.output)\(rotated.errors)")
            #expect(rotated.output.contains("unreachable: kr-demo:sn-0005 (for "))
            #expect(
                rotated.output.contains("4 of 5 members reachable, the commit needs 4 (K=3 + Z=1): it can still commit")
            )
            #expect(rotated.output.contains("done: epoch 2, 5 members, threshold 3"))
            #expect(rotated.output.contains("not reachable, will catch up when back: kr-demo:sn-0005"))
            try await rack.waitUntil(Array(0..<4), "unlocked at epoch 2") { $0.unlockedEpoch == Epoch(2) }
            let behind = try #require(await rack.statuses([4])[0])
            #expect(behind.committedEpoch == Epoch(1))

            // Power cut while partitioned: the four unlock at epoch 2; node 5 cannot reach anyone and stays locked.
            await rack.stopAll()
            for index in all { try rack.launch(index) }
            try await rack.waitUntil(Array(0..<4), "unlocked while node 5 is partitioned") {
                $0.unlockedEpoch == Epoch(2)
            }
            try await rack.waitUntilAnswering(4)
            let isolated = try #require(await rack.statuses([4])[0])
            #expect(isolated.unlockedEpoch == nil)
            #expect(isolated.connected.isEmpty)

            // Heal: node 5 reaches its peers, learns of epoch 2, computes its share and unlocks.
            try lab.heal(cut)
            let caught = try await rack.waitUntil([4], timeout: .seconds(60), "caught up after the heal") {
                $0.committedEpoch == Epoch(2) && $0.unlockedEpoch == Epoch(2)
            }
            #expect(caught.first?.secretCheck == (try await secretCheck(rack, 0)))
            // Scraped from the operator's host, as a monitoring system would.
            let curl = try #require(
                ["/usr/bin/curl", "/bin/curl"].first { FileManager.default.isExecutableFile(atPath: $0) },
                "curl is needed to scrape from another host (apt-get install curl)")
            let address = try #require(rack.members[4].metricsAddress)
            let (ip, wrapped) = lab.command(
                in: operatorHost, curl, ["-sS", "--max-time", "10", "http://\(address)/metrics"])
            let scraped = try await runToCompletion(URL(fileURLWithPath: ip), wrapped)
            #expect(scraped.status == 0, "\(scraped.errors)")
            #expect(metricValue(scraped.output, "keyrack_node_unlocked") == 1)
            #expect(metricValue(scraped.output, "keyrack_node_committed_epoch") == 2)
            #expect(metricValue(scraped.output, "keyrack_node_peers_connected") == 4)
            let status = try await rackCommand(rack, lab, on: operatorHost, ["status", "--json"])
            #expect(status.status == 0, "\(status.errors)")
            let statuses = try JSONDecoder().decode([NodeStatus?].self, from: Data(status.output.utf8))
            #expect(statuses.compactMap { $0?.committedEpoch } == Array(repeating: Epoch(2), count: 5))
        }
    }

    @Test(
        "grow onto a new host, shrink, and a rotation that cannot commit gives up, then resumes from another operator host"
    )
    func growShrinkAndResume() async throws {
        try await withHostRack(count: 4) { rack, lab, operatorHost in
            for index in 0..<4 { try rack.launch(index) }
            for index in 0..<4 { try await rack.waitUntilAnswering(index) }
            let setUp = try await rackCommand(
                rack, lab, on: operatorHost, ["init", "--threshold", "2"], nodes: [0, 1, 2])
            #expect(setUp.status == 0, "\(setUp.output)\(setUp.errors)")
            try await rack.waitUntil([0, 1, 2], "unlocked at epoch 1") { $0.unlockedEpoch == Epoch(1) }

            // Node 4 on its own host joins.
            let added = try await rackCommand(
                rack, lab, on: operatorHost, ["add", "--add", rack.endpoints([3])[0]], nodes: [0, 1, 2])
            #expect(added.status == 0, "\(added.output)\(added.errors)")
            #expect(added.output.contains("done: epoch 2, 4 members"))
            try await rack.waitUntil(Array(0..<4), "unlocked at epoch 2") { $0.unlockedEpoch == Epoch(2) }
            try await expectSameSecret(rack, Array(0..<4))

            // Node 1 leaves and is told so.
            let removed = try await rackCommand(rack, lab, on: operatorHost, ["remove", "--remove", "kr-demo:sn-0001"])
            #expect(removed.status == 0, "\(removed.output)\(removed.errors)")
            #expect(removed.output.contains("done: epoch 3, 3 members"))
            #expect(removed.output.contains("told kr-demo:sn-0001 it was removed at epoch 3"))
            try await rack.waitUntil([1, 2, 3], "unlocked at epoch 3") { $0.unlockedEpoch == Epoch(3) }
            #expect(try #require(await rack.statuses([0])[0]).expunged?.epoch == Epoch(3))

            // Two of the three cut off: the rotation cannot commit, and the operator says why when it gives up.
            let hosts = try [2, 3].map { try #require(rack.members[$0].host) }
            for host in hosts { try lab.partition(host) }
            let stuck = try await rackCommand(
                rack, lab, on: operatorHost, ["rotate", "--timeout", "4"], nodes: [1, 2, 3])
            #expect(stuck.status != 0)
            #expect(stuck.errors.contains("gave up after 4.0 seconds"), "\(stuck.output)\(stuck.errors)")
            #expect(stuck.errors.contains("1 of 3 members reachable, the commit needs 2"))
            #expect(stuck.errors.contains("it cannot commit until 1 more answer"))
            #expect(stuck.output.contains("unreachable: kr-demo:sn-0003 (for "))

            // Healed, the same command from another host (the same operator identity) finishes the job.
            for host in hosts { try lab.heal(host) }
            let otherHost = try lab.addHost("op2", octet: 3)
            let resumed = try await rackCommand(rack, lab, on: otherHost, ["rotate"], nodes: [1, 2, 3])
            #expect(resumed.status == 0, "\(resumed.output)\(resumed.errors)")
            let epoch = try #require(await rack.statuses([1])[0]?.committedEpoch)
            #expect(epoch > Epoch(3))
            #expect(resumed.output.contains("done: epoch \(epoch), 3 members"))
            try await rack.waitUntil([1, 2, 3], "unlocked after the resumed rotation") { $0.unlockedEpoch == epoch }
        }
    }

    @Test("a rolling upgrade from the operator's host: a partitioned node holds the policy back until it heals")
    func rollingUpgradeAcrossHosts() async throws {
        try await withHostRack(count: 3) { rack, lab, operatorHost in
            let all = Array(0..<3)
            for index in all { try rack.launch(index) }
            for index in all { try await rack.waitUntilAnswering(index) }
            let setUp = try await rackCommand(rack, lab, on: operatorHost, ["init", "--threshold", "2"])
            #expect(setUp.status == 0, "\(setUp.output)\(setUp.errors)")
            try await rack.waitUntil(all, "unlocked at epoch 1") { $0.unlockedEpoch == Epoch(1) }
            let next = try RollingUpgradeTests.nextBuild(in: rack)
            let both = try await RollingUpgradeTests.printPolicy(
                rack, "both.json", ["--from", rack.policyFile.path, "--executable", next.path])
            let onlyNext = try await RollingUpgradeTests.printPolicy(rack, "next.json", ["--executable", next.path])

            // Node 3 cut off: nothing is applied anywhere, and the operator says which node it could not reach.
            let host = try #require(rack.members[2].host)
            try lab.partition(host)
            let held = try await rackCommand(rack, lab, on: operatorHost, ["policy", "set", "--file", both])
            #expect(held.status == 1)
            #expect(held.output.contains("kr-demo:sn-0001") && held.output.contains("accepts it, not applied"))
            #expect(held.output.contains("UNREACHABLE"), "\(held.output)")
            #expect(held.errors.contains("in force on 0 of 3 nodes"), "\(held.errors)")
            for status in await rack.statuses([0, 1]) { #expect(status?.policy?.source == .file) }
            // Healed, the same command finishes the job under the same version.
            try lab.heal(host)
            let applied = try await rackCommand(rack, lab, on: operatorHost, ["policy", "set", "--file", both])
            #expect(applied.status == 0, "\(applied.output)\(applied.errors)")
            #expect(applied.output.contains("done: version 1 in force on all 3 nodes"))

            var latest = Epoch(1)
            for index in all {
                await rack.stop(index)
                try await rack.start(index, executable: next.path)
                try await rack.waitUntil([index], "unlocked after its upgrade") { $0.unlockedEpoch == latest }
                let rotated = try await rackCommand(rack, lab, on: operatorHost, ["rotate"])
                #expect(rotated.status == 0, "\(rotated.output)\(rotated.errors)")
                latest = try #require(await rack.statuses([0])[0]?.committedEpoch)
                try await rack.waitUntil(all, "unlocked") { $0.unlockedEpoch == latest }
            }
            let dropped = try await rackCommand(rack, lab, on: operatorHost, ["policy", "set", "--file", onlyNext])
            #expect(dropped.status == 0, "\(dropped.output)\(dropped.errors)")
            #expect(dropped.output.contains("done: version 2 in force on all 3 nodes"))
            let shown = try await rackCommand(rack, lab, on: operatorHost, ["policy", "show"])
            #expect(shown.status == 0)
            #expect(
                shown.output.split(separator: "\n").filter { $0.contains("operator") && $0.contains(" 2 ") }.count == 3)
        }
    }
}
