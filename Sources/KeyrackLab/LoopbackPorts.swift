import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Free TCP ports on 127.0.0.1 for the demo, the lab, the benchmarks and the
/// tests.
public enum LoopbackPorts {
    /// A port on 127.0.0.1 that was free a moment ago, chosen at random
    /// below the kernel's ephemeral range: a node or server that restarts on
    /// its port must not find it taken by some process's outgoing
    /// connection, which the kernel gives ports from that range. A port is
    /// handed out once per process: a rack reserves a node's port long before
    /// the node binds it, and a test running beside it must not be given the
    /// same one meanwhile.
    public static func free() throws(LabError) -> Int {
        let ephemeralStart =
            (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        let candidates = 10_000..<max(10_001, min(ephemeralStart, 65_536))
        for _ in 0..<200 {
            let port = Int.random(in: candidates)
            guard isFree(port), handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            return port
        }
        throw LabError(.noFreePort, "cannot find a free loopback port below \(candidates.upperBound)")
    }

    private static let handedOut = Mutex(Set<Int>())

    /// Whether `port` on 127.0.0.1 can be bound now.
    public static func isFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
