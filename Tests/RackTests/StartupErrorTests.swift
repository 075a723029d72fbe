import Foundation
import KeyrackLab
import KeyrackTestSupport
import Logging
import NodeAgent
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Every way `keyrack node run` can fail to start, reached in process with
/// the production ``NodeRuntime``, each asserted by its code.
@Suite("A node that cannot start says why, by code")
struct StartupErrorTests {
    static let logger = Logger(label: "keyrack.test.startup")

    /// The code `configuration` fails to open or start with, or nil if it runs.
    /// A node that starts instead is stopped after 30 seconds.
    static func failure(
        _ configuration: NodeConfiguration, volumeOptions: VolumeOptions = VolumeOptions()
    ) async -> NodeRuntimeErrorCode? {
        await withTaskGroup(of: NodeRuntimeErrorCode?.self) { group in
            group.addTask {
                do {
                    let runtime = try await NodeRuntime.open(
                        configuration: configuration, logger: logger, volumeOptions: volumeOptions)
                    try await runtime.run()
                    Issue.record("the node started and stopped")
                    return nil
                } catch let error as NodeRuntimeError {
                    #expect(!error.reason.isEmpty)
                    return error.code
                } catch {
                    Issue.record("not a NodeRuntimeError: \(error)")
                    return nil
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(30))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    @Test("identity, policy, evidence, ledger, volumes and listen: each problem has its code")
    func everyCode() async throws {
        try await withRack(count: 3) { rack in
            let base = rack.members[0].configuration
            let scratch = rack.directory.appendingPathComponent("startup-errors")
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            let aFile = scratch.appendingPathComponent("a-file")
            #expect(FileManager.default.createFile(atPath: aFile.path, contents: Data("x".utf8)))

            var noKey = base
            noKey.deviceKey = scratch.appendingPathComponent("absent.key").path
            #expect(await Self.failure(noKey) == .identity)

            var otherCertificate = base
            otherCertificate.certificate = rack.members[1].configuration.certificate
            #expect(await Self.failure(otherCertificate) == .identity)

            var noPolicy = base
            noPolicy.policy = scratch.appendingPathComponent("absent-policy.json").path
            #expect(await Self.failure(noPolicy) == .policy)

            var noTEE = base
            noTEE.evidence = "software-tee:" + scratch.appendingPathComponent("no-tee").path
            #expect(await Self.failure(noTEE) == .evidence)

            // Both ledger copies present and corrupt: nothing is silently lost, the node stops.
            var corruptLedger = base
            corruptLedger.ledger = try ["ledger-a", "ledger-b"].map { name in
                let folder = scratch.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                try Data("KRLG not a sealed ledger".utf8).write(to: folder.appendingPathComponent("ledger"))
                return folder.path
            }
            #expect(await Self.failure(corruptLedger) == .ledger)
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: corruptLedger.ledger[0]).appendingPathComponent("ledger"))
                    == Data("KRLG not a sealed ledger".utf8), "the corrupt copy was overwritten")

            var volumes = base
            volumes.volumes = [LuksVolume(disk: "data0", device: aFile.path, open: false)]
            let noCryptsetup = VolumeOptions(cryptsetupSearchPath: [scratch.path])
            #expect(await Self.failure(volumes, volumeOptions: noCryptsetup) == .volumes)

            // The peer port taken by another listener.
            let taken = try TakenPort(base.listen.port)
            defer { taken.close() }
            #expect(await Self.failure(base) == .listen)

            // An admin socket whose folder does not exist.
            var noAdmin = base
            noAdmin.listen = PeerAddress(host: "127.0.0.1", port: try freeLoopbackPort())
            noAdmin.admin = scratch.appendingPathComponent("absent/admin.sock").path
            #expect(await Self.failure(noAdmin) == .listen)
        }
    }
}

/// A TCP listener on 127.0.0.1:`port`, so nothing else can bind it.
struct TakenPort {
    let descriptor: Int32

    init(_ port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard descriptor >= 0, bound == 0, listen(descriptor, 1) == 0 else {
            Glibc.close(descriptor)
            throw TestSupportError("cannot take port \(port): errno \(errno)")
        }
    }

    func close() { Glibc.close(descriptor) }
}
