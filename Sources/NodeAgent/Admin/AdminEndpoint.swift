import Foundation

/// Where a node's admin API is reached: its Unix socket on this machine, or
/// its network listener (`adminListen`), which only an operator holding a
/// certificate with the operator role may use.
///
/// `keyrack … --nodes` takes both, mixed: an entry that is `host:port` (a
/// numeric port, no `/`) is an address, anything else a socket path.
public enum AdminEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A Unix socket path.
    case socket(String)
    /// A network address (mutually authenticated TLS 1.3).
    case network(PeerAddress)

    /// Parses one `--nodes` entry: `host:port` or `[v6]:port` is an address, anything else a path.
    public init(parsing text: String) {
        if !text.contains("/"), let address = try? PeerAddress(parsing: text), address.port > 0 {
            self = .network(address)
        } else {
            self = .socket(text)
        }
    }

    /// Whether reaching it needs the operator's credentials.
    public var isNetwork: Bool {
        if case .network = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .socket(let path): return path
        case .network(let address): return address.description
        }
    }
}

/// Who is asking the node: someone on this machine with access to the admin
/// socket, or an operator over the network (the name in its verified
/// certificate, and where it connected from).
public enum AdminCaller: Sendable, Equatable, CustomStringConvertible {
    /// The Unix socket (mode 0600: the node's owner).
    case local
    /// An operator certificate over mutually authenticated TLS.
    case networkOperator(name: String, from: String)

    public var description: String {
        switch self {
        case .local: return "the admin socket"
        case .networkOperator(let name, let from): return "operator \(name) at \(from)"
        }
    }
}
