import Foundation
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

    @Test("the socket file is 0600 and the process umask is what it was; a request is answered")
    func privateAndAnswered() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("admin.sock").path
        let before = umask(0o022)
        umask(before)
        let listener = try await AdminSocket.listen(path: path) { request in
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
        let listener = try await AdminSocket.listen(path: path, requestDeadline: .milliseconds(300)) { _ in
            AdminResponse()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await listener.run() }
            // A raw client that connects and never writes: the server closes it (read sees end of file).
            let outcome = try await Task.detached { try Self.connectAndWaitForClose(path: path) }.value
            #expect(outcome == .closedByServer)
            let response = try await AdminSocket.call(AdminRequest(.status), path: path)
            #expect(response.error == nil)
            await listener.close()
            try await group.waitForAll()
        }
    }

    enum Outcome: Equatable {
        case closedByServer, stillOpen
        case readError(Int32)
    }

    /// Connects to `path`, sends nothing and waits (at most 10 s) for the server to close.
    static func connectAndWaitForClose(path: String) throws -> Outcome {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(connected == 0, "connect: errno \(errno)")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 16)
        let count = read(descriptor, &buffer, buffer.count)
        if count == 0 { return .closedByServer }
        if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK ? .stillOpen : .readError(errno) }
        return .stillOpen
    }
}
