import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A raw connection that never sends: what a stalled or hostile client
/// holds open. TCP from a given loopback address, or a Unix socket.
final class RawClient {
    let descriptor: Int32

    /// Connects to 127.0.0.1:`port` from `source` (any 127.0.0.0/8 address).
    init(port: Int, from source: String) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_addr.s_addr = inet_addr("127.0.0.1")
        remote.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(bound == 0, "bind to \(source): errno \(errno)")
        try connectTo(&remote)
    }

    /// Connects to the Unix socket at `path`.
    init(unixPath path: String) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        try connectTo(&address)
    }

    private func connectTo<Address>(_ address: inout Address) throws {
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        try #require(connected == 0, "connect: errno \(errno)")
    }

    /// "closed" if the server hangs up within `seconds`, "open" if not, or the read's error.
    func waitForClose(seconds: Int) -> String {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let got = read(descriptor, &byte, 1)
        if got == 0 { return "closed" }
        if got < 0 { return errno == EAGAIN || errno == EWOULDBLOCK ? "open" : "error \(errno)" }
        return "sent \(got) bytes"
    }

    deinit { close(descriptor) }
}
