import Foundation
import KeyrackTestSupport
import NIOCore
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

/// Review finding L5: the admin socket is private from its creation, and a
/// client that stalls is disconnected.
@Suite("Admin socket: private from bind, a deadline for the request", .serialized)
struct AdminSocketTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("admin-\(UUID().uuidString)")

    @Test("something other than a socket at the path is refused and left as it is; a stale socket is replaced")
    func notASocket() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("admin.sock").path
        try Data("an operator's notes".utf8).write(to: URL(fileURLWithPath: path))
        let refused = await #expect(throws: AdminError.self) {
            _ = try await AdminSocket.listen(path: path) { _, _ in AdminResponse() }
        }
        #expect(refused?.code == .socket)
        #expect(refused?.reason.contains("something other than a socket is there") == true)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "an operator's notes")
        // No private staging directory is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["admin.sock"])
        // A socket left by a process that died is replaced.
        try FileManager.default.removeItem(atPath: path)
        let first = try await AdminSocket.listen(path: path) { _, _ in AdminResponse() }
        await first.close()
        var stale = stat()
        #expect(lstat(path, &stale) == 0 && stale.st_mode & S_IFMT == S_IFSOCK)
        let second = try await AdminSocket.listen(path: path) { request, _ in
            AdminResponse(key: request.operation.rawValue)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await second.run() }
            #expect(try await AdminSocket.call(AdminRequest(.status), path: path).key == "status")
            await second.close()
            try await group.waitForAll()
        }
    }

    @Test("the socket file is 0600 and the process umask is what it was; a request is answered")
    func privateAndAnswered() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("admin.sock").path
        let before = umask(0o022)
        umask(before)
        let listener = try await AdminSocket.listen(path: path) { request, _ in
            AdminResponse(key: request.operation.rawValue)
        }
        let after = umask(0o022)
        umask(after)
        #expect(after == before)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await listener.run() }
            let response = try await AdminSocket.call(AdminRequest(.status), path: path)
            #expect(response.key == "status")
            await listener.close()
            try await group.waitForAll()
        }
    }

    @Test("a client that connects and sends nothing is disconnected at the deadline; others are still served")
    func stalledClient() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("admin.sock").path
        let listener = try await AdminSocket.listen(path: path, requestDeadline: .seconds(1)) { _, _ in
            AdminResponse()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await listener.run() }
            // A raw client that connects and never writes: the server closes it (read sees end of file).
            let outcome = try await offCooperativePool { try RawClient(unixPath: path).waitForClose(seconds: 10) }
            #expect(outcome == "closed")
            let response = try await AdminSocket.call(AdminRequest(.status), path: path)
            #expect(response.error == nil)
            await listener.close()
            try await group.waitForAll()
        }
    }
}
