import Foundation
import KeyrackLab

/// A real `redis-server` on a free loopback port, for one test or suite.
///
/// Tests talk to the real server; if it is not installed they fail with the
/// install step rather than skip.
public final class RedisServer: @unchecked Sendable {
    /// The loopback port it listens on.
    public let port: Int
    private var process: Process?
    private let directory: URL
    private let extra: [String]
    private let tls: Bool

    /// Starts a server (no persistence) and waits until it answers. With
    /// `tls` (a server certificate and key, PEM) it speaks only TLS on its
    /// port; with `password` it requires AUTH.
    public init(tls: (certificate: String, key: String)? = nil, password: String? = nil) throws {
        var extra: [String] = []
        if let tls {
            extra += ["--tls-cert-file", tls.certificate, "--tls-key-file", tls.key, "--tls-auth-clients", "no"]
        }
        if let password { extra += ["--requirepass", password] }
        self.extra = extra
        self.tls = tls != nil
        guard let executable = findExecutable("redis-server") else {
            throw TestSupportError(
                "redis-server is not installed: run `apt-get install -y redis-server` (CI does this in .ci/run)"
            )
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyrack-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lastError: (any Error)?
        for _ in 0..<5 {
            let candidate = try freeLoopbackPort()
            do {
                process = try Self.launch(
                    executable, port: candidate, directory: directory, extra: extra, tls: self.tls)
                port = candidate
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? TestSupportError("could not start redis-server")
    }

    /// `redis://127.0.0.1:<port>/<db>`
    public func url(database: Int = 0) -> String { "redis://127.0.0.1:\(port)/\(database)" }

    /// Stops the server (as a crash would: SIGKILL).
    ///
    /// One signal, and only while the process is ours: after it exits and is
    /// reaped its pid can be reused (pid_max is small in containers), and a
    /// second signal could kill another test's server.
    public func stop() {
        guard let process else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    /// Starts the server again on the same port.
    public func restart() throws {
        stop()
        guard let executable = findExecutable("redis-server") else { throw TestSupportError("redis-server vanished") }
        var lastError: (any Error)?
        for _ in 0..<20 {
            do {
                process = try Self.launch(executable, port: port, directory: directory, extra: extra, tls: tls)
                return
            } catch {
                lastError = error
                usleep(100_000)
            }
        }
        throw lastError!
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    static func launch(
        _ executable: String, port: Int, directory: URL, extra: [String] = [], tls: Bool = false
    ) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let ports = tls ? ["--port", "0", "--tls-port", "\(port)"] : ["--port", "\(port)"]
        process.arguments =
            ports + [
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory.path, "--protected-mode", "yes", "--loglevel", "warning",
            ] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait for it to accept connections — and make sure it is this
        // process listening: another test's server may hold the port (the
        // port was free when chosen, not necessarily when bound).
        for _ in 0..<200 {
            if canConnect(port: port) {
                // A TLS or password-protected server is not asked (INFO needs both); it is ours if it still runs.
                if tls || extra.contains("--requirepass") {
                    usleep(50_000)
                    if process.isRunning { return process }
                    break
                }
                if redisProcessID(port: port) == process.processIdentifier { return process }
                break
            }
            if !process.isRunning { break }
            usleep(10_000)
        }
        process.terminate()
        process.waitUntilExit()
        throw TestSupportError("redis-server did not start on port \(port)")
    }
}

/// A port on 127.0.0.1 that was free a moment ago (``LoopbackPorts/free()``).
public func freeLoopbackPort() throws -> Int {
    try LoopbackPorts.free()
}

/// A TCP socket connected to 127.0.0.1:`port`, or nil (the caller closes it).
public func connectLoopback(port: Int) -> Int32? {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else {
        close(descriptor)
        return nil
    }
    return descriptor
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func canConnect(port: Int) -> Bool {
    guard let descriptor = connectLoopback(port: port) else { return false }
    close(descriptor)
    return true
}

/// The full path of `name` on PATH (or the usual system directories).
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
    return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// A failure in test setup, with the step that fixes it.
public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The `process_id` the Redis server on 127.0.0.1:`port` reports (`INFO server`).
func redisProcessID(port: Int) -> Int32? {
    guard let descriptor = connectLoopback(port: port) else { return nil }
    defer { close(descriptor) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = Array("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n".utf8)
    guard request.withUnsafeBytes({ send(descriptor, $0.baseAddress, $0.count, 0) }) == request.count else {
        return nil
    }
    var reply = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 4096)
    while reply.count < 65_536 {
        let got = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if got <= 0 { break }
        reply += chunk[0..<got]
        let text = String(decoding: reply, as: UTF8.self)
        if let line = text.split(separator: "\r\n").first(where: { $0.hasPrefix("process_id:") }) {
            return Int32(line.dropFirst("process_id:".count))
        }
    }
    return nil
}
