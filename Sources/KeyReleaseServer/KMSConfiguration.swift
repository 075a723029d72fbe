import Foundation
import KeyRelease
import KeyrackCore
import RedisClient

/// The KMS's settings, read from environment variables (the flags of
/// `keyrack kms serve` set the same names). A bad value stops start-up with
/// a message naming the variable.
public struct KMSConfiguration: Sendable, Equatable {
    public enum KeyProviderKind: String, Sendable, Equatable {
        case local, dstack
    }

    public var listenHost = "127.0.0.1"
    public var listenPort = 8080
    public var challengeTTLSeconds = 300
    public var maximumPendingChallenges = 8
    public var maximumPendingChallengesTotal = 100_000
    public var idleTimeoutSeconds = 30
    public var maximumConnections = 4_096
    public var redis: RedisConfiguration?
    public var redisCluster: RedisClusterConfiguration?
    public var policyFile: String?
    public var keyProvider = KeyProviderKind.local
    public var keyRootFile = "kms-root.key"
    public var dstackSocketPath = "/var/run/dstack.sock"
    public var keyNamespacePrefix = "keyrack/storage"
    public var trustAnchorFile: String?
    public var collateralDirectory: String?
    public var pccsURL: String?
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    /// The variables this configuration reads, with their meaning (for `--help`).
    public static let variables: [(name: String, meaning: String)] = [
        ("LISTEN_ADDR", "host:port to listen on (127.0.0.1:8080)"),
        ("CHALLENGE_TTL_SECS", "how long a challenge stays valid (300)"),
        ("MAX_PENDING_CHALLENGES", "unexpired challenges one peer may hold, in each of its two budgets (8)"),
        ("MAX_PENDING_CHALLENGES_TOTAL", "unexpired challenges in the whole store; past it 429 RateLimited (100000)"),
        (
            "IDLE_TIMEOUT_SECS",
            "a connection's handshake and request, or its wait for the next request, must end within this (30)"
        ),
        ("MAX_CONNECTIONS", "open connections at most; past it new ones are closed at accept (4096)"),
        (
            "REDIS_URL",
            "share challenges between replicas: redis://[user:pass@]host:port/db, rediss://… (TLS), or "
                + "redis+cluster://h1:p1,h2:p2,… (a Redis Cluster; rediss+cluster:// with TLS) (default: in memory)"
        ),
        ("REDIS_CA_CERT", "PEM CA certificates for a TLS Redis (rediss://) instead of the system's roots"),
        (
            "REDIS_PIPELINED_CONNECTIONS",
            "N > 0: share N Redis connections by pipelining instead of a pool of 64 (0)"
        ),
        ("POLICY_FILE", "the attestation policy JSON, required to release keys; loaded when it appears or changes"),
        ("KEY_PROVIDER", "local | dstack (local)"),
        ("KEY_ROOT_FILE", "the local provider's 32-byte root, made once by `keyrack kms init-root` (kms-root.key)"),
        ("DSTACK_SOCKET_PATH", "the dstack agent's socket (/var/run/dstack.sock)"),
        ("KEY_NAMESPACE_PREFIX", "the key derivation namespace (keyrack/storage)"),
        ("TRUST_ANCHOR", "DER or PEM root CA for quotes (Intel's SGX root CA)"),
        ("COLLATERAL_DIR", "directory of collateral JSON documents, indexed by FMSPC; reloaded on SIGHUP and change"),
        (
            "PCCS_URL",
            "PCCS or Intel PCS base URL: collateral fetched on first use, cached, refreshed (instead of COLLATERAL_DIR)"
        ),
        ("TLS_CERT", "PEM certificate chain to serve HTTPS (with TLS_KEY)"),
        ("TLS_KEY", "PEM private key for TLS_CERT"),
    ]

    /// Defaults only.
    public init() {}

    /// Reads `environment`.
    public init(environment: [String: String]) throws(KMSConfigurationError) {
        func value(_ name: String) -> String? {
            guard let raw = environment[name]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ name: String, in range: ClosedRange<Int>) throws(KMSConfigurationError) -> Int? {
            guard let raw = value(name) else { return nil }
            guard let number = Int(raw), range.contains(number) else {
                throw KMSConfigurationError(
                    .value, "\(name): must be a whole number from \(range.lowerBound) to \(range.upperBound)"
                )
            }
            return number
        }
        if let listen = value("LISTEN_ADDR") {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
                (0...65535).contains(port), colon != listen.startIndex
            else { throw KMSConfigurationError(.value, "LISTEN_ADDR: must be host:port") }
            listenHost = String(listen[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            listenPort = port
        }
        challengeTTLSeconds = try integer("CHALLENGE_TTL_SECS", in: 1...86_400) ?? challengeTTLSeconds
        maximumPendingChallenges = try integer("MAX_PENDING_CHALLENGES", in: 1...10_000) ?? maximumPendingChallenges
        maximumPendingChallengesTotal =
            try integer("MAX_PENDING_CHALLENGES_TOTAL", in: 1...100_000_000) ?? maximumPendingChallengesTotal
        idleTimeoutSeconds = try integer("IDLE_TIMEOUT_SECS", in: 1...3_600) ?? idleTimeoutSeconds
        maximumConnections = try integer("MAX_CONNECTIONS", in: 1...1_000_000) ?? maximumConnections
        if let url = value("REDIS_URL") {
            do {
                if url.hasPrefix("redis+cluster://") || url.hasPrefix("rediss+cluster://") {
                    redisCluster = try RedisClusterConfiguration(url: url)
                } else {
                    redis = try RedisConfiguration(url: url)
                }
            } catch {
                throw KMSConfigurationError(.value, "REDIS_URL: \(error.reason)")
            }
            redis?.pipelinedConnections = try integer("REDIS_PIPELINED_CONNECTIONS", in: 0...64) ?? 0
        }
        if let file = value("REDIS_CA_CERT") {
            guard redis?.tls == true || redisCluster?.template.tls == true else {
                throw KMSConfigurationError(
                    .combination, "REDIS_CA_CERT: needs a TLS Redis URL (rediss:// or rediss+cluster://)")
            }
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw KMSConfigurationError(.unreadable, "REDIS_CA_CERT: cannot read \(file)")
            }
            redis?.caCertificateFile = file
            redisCluster?.template.caCertificateFile = file
        }
        policyFile = value("POLICY_FILE")
        if let kind = value("KEY_PROVIDER") {
            guard let parsed = KeyProviderKind(rawValue: kind) else {
                throw KMSConfigurationError(.value, "KEY_PROVIDER: must be local or dstack")
            }
            keyProvider = parsed
        }
        keyRootFile = value("KEY_ROOT_FILE") ?? keyRootFile
        dstackSocketPath = value("DSTACK_SOCKET_PATH") ?? dstackSocketPath
        if let prefix = value("KEY_NAMESPACE_PREFIX") {
            guard !prefix.hasSuffix("/") else {
                throw KMSConfigurationError(.value, "KEY_NAMESPACE_PREFIX: must not end with '/'")
            }
            keyNamespacePrefix = prefix
        }
        trustAnchorFile = value("TRUST_ANCHOR")
        collateralDirectory = value("COLLATERAL_DIR")
        pccsURL = value("PCCS_URL")
        if let pccsURL {
            guard collateralDirectory == nil else {
                throw KMSConfigurationError(
                    .combination, "PCCS_URL: give PCCS_URL or COLLATERAL_DIR, not both")
            }
            guard let url = URL(string: pccsURL), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw KMSConfigurationError(.value, "PCCS_URL: \(pccsURL) is not an http(s) URL")
            }
        }
        tlsCertificateFile = value("TLS_CERT")
        tlsKeyFile = value("TLS_KEY")
        if (tlsCertificateFile == nil) != (tlsKeyFile == nil) {
            let missing = tlsCertificateFile == nil ? "TLS_CERT" : "TLS_KEY"
            throw KMSConfigurationError(.combination, "\(missing): TLS_CERT and TLS_KEY must be given together")
        }
        // POLICY_FILE may not exist yet: the KMS starts, answers 503
        // PolicyNotReady, and loads it when it appears.
        for (name, path) in [
            ("TRUST_ANCHOR", trustAnchorFile), ("TLS_CERT", tlsCertificateFile), ("TLS_KEY", tlsKeyFile),
        ] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw KMSConfigurationError(.unreadable, "\(name): cannot read \(path)")
            }
        }
        if let directory = collateralDirectory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else {
                throw KMSConfigurationError(.unreadable, "COLLATERAL_DIR: \(directory) is not a directory")
            }
        }
    }
}

/// A configuration value that cannot be used. The reason starts with the
/// variable's name: `LISTEN_ADDR: must be host:port`.
public typealias KMSConfigurationError = CodedError<KMSConfigurationErrorCode>

/// The codes of ``KMSConfigurationError``.
public struct KMSConfigurationErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// A variable's value has the wrong form or is out of range.
    public static let value = KMSConfigurationErrorCode("KMS-CONFIG-VALUE")
    /// Variables that go together or exclude each other: `PCCS_URL` with
    /// `COLLATERAL_DIR`, `TLS_CERT` without `TLS_KEY`.
    public static let combination = KMSConfigurationErrorCode("KMS-CONFIG-COMBINATION")
    /// A file or directory a variable names cannot be read, or is not a directory.
    public static let unreadable = KMSConfigurationErrorCode("KMS-CONFIG-UNREADABLE")
    /// A file a variable names is read but cannot be used: `TRUST_ANCHOR` is
    /// not a certificate, `TLS_CERT` or `TLS_KEY` does not load.
    public static let content = KMSConfigurationErrorCode("KMS-CONFIG-CONTENT")
}
