import KeyrackCore
import NIOCore

/// Where and how to reach a Redis server. Printing it never shows the password.
public struct RedisConfiguration: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Host name or address.
    public var host: String
    /// TCP port.
    public var port: Int
    /// Database index (`SELECT`).
    public var database: Int
    /// ACL user name, if any.
    public var user: String?
    /// Password (`AUTH`), if any. Never printed.
    public var password: String?
    /// How many connections the pool keeps at most.
    public var maximumConnections: Int
    /// When above zero, the client keeps this many connections and
    /// pipelines every command over them (Redis answers in order) instead of
    /// leasing a connection per command: many concurrent callers then share
    /// a few sockets, and the server reads and answers commands in batches.
    /// A command that times out closes its connection, failing the commands
    /// pipelined behind it.
    public var pipelinedConnections: Int
    /// How long to wait for a TCP connection.
    public var connectTimeout: TimeAmount
    /// How long to wait for a reply.
    public var commandTimeout: TimeAmount
    /// TLS (`rediss://`): the server's certificate is checked against the
    /// system's roots, or against ``caCertificateFile`` when it is set, and
    /// must name ``host``.
    public var tls: Bool
    /// PEM CA certificates to trust for a TLS server instead of the system's (`REDIS_CA_CERT`).
    public var caCertificateFile: String?

    /// A configuration with the default pool size and timeouts.
    public init(
        host: String,
        port: Int = 6379,
        database: Int = 0,
        user: String? = nil,
        password: String? = nil,
        maximumConnections: Int = 64,
        pipelinedConnections: Int = 0,
        connectTimeout: TimeAmount = .seconds(1),
        commandTimeout: TimeAmount = .seconds(2),
        tls: Bool = false,
        caCertificateFile: String? = nil
    ) {
        self.tls = tls
        self.caCertificateFile = caCertificateFile
        self.pipelinedConnections = pipelinedConnections
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.maximumConnections = maximumConnections
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`, or `rediss://…` for TLS.
    public init(url: String) throws(RedisConfigurationError) {
        let tls = url.hasPrefix("rediss://")
        guard tls || url.hasPrefix("redis://") else {
            throw .init(.scheme, "the URL must start with redis:// or rediss:// (TLS)")
        }
        var rest = Substring(url.dropFirst(tls ? "rediss://".count : "redis://".count))
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let name = credentials[..<colon]
                user = name.isEmpty ? nil : String(name)
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let index = Int(path), index >= 0 else {
                    throw .init(.database, "the database must be a non-negative number")
                }
                database = index
            }
            rest = rest[..<slash]
        }
        var host = rest
        var port = 6379
        if let colon = rest.lastIndex(of: ":") {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65535).contains(number) else {
                throw .init(.port, "the port must be a number from 1 to 65535")
            }
            port = number
            host = rest[..<colon]
        }
        guard !host.isEmpty else { throw .init(.host, "the URL has no host") }
        self.init(host: String(host), port: port, database: database, user: user, password: password, tls: tls)
    }
}

extension RedisConfiguration {
    /// `redis[s]://[user:<redacted>@]host:port/db`.
    public var description: String {
        let credentials = password == nil ? "" : "\(user ?? ""):<redacted>@"
        return "\(tls ? "rediss" : "redis")://\(credentials)\(host):\(port)/\(database)"
    }

    public var debugDescription: String { description }
}

/// A Redis URL that could not be understood. Never contains the password.
public typealias RedisConfigurationError = CodedError<RedisConfigurationErrorCode>

/// The codes of ``RedisConfigurationError``: the part of the URL that is wrong.
public struct RedisConfigurationErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The URL does not start with `redis://` or `rediss://`.
    public static let scheme = RedisConfigurationErrorCode("REDIS-URL-SCHEME")
    /// The URL has no host.
    public static let host = RedisConfigurationErrorCode("REDIS-URL-HOST")
    /// The port is not a number from 1 to 65535.
    public static let port = RedisConfigurationErrorCode("REDIS-URL-PORT")
    /// The database is not a non-negative number.
    public static let database = RedisConfigurationErrorCode("REDIS-URL-DATABASE")
}
