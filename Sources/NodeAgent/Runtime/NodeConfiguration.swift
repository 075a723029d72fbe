import Foundation
import KeyrackCore
import SecretSharing
import TrustQuorum

/// What `keyrack node run --config F` reads: one JSON object.
///
/// ```json
/// {
///   "platform": "kr-1000:sn-0001",
///   "rackId": "00112233445566778899aabbccddeeff",
///   "identity": { "key": "device.key", "certificate": "device.pem",
///                 "intermediate": "intermediate.pem", "root": "root.pem",
///                 "operatorCA": "operator-ca.pem",
///                 "deniedSerials": ["3a5f…"] },
///   "listen": "127.0.0.1:7001",
///   "peers": { "kr-1000:sn-0002": "127.0.0.1:7002" },
///   "ledger": ["ledger-a", "ledger-b"],
///   "admin": "admin.sock",
///   "adminListen": "10.77.0.11:7101",
///   "metricsListen": "10.77.0.11:9101",
///   "attestation": { "policy": "policy.json", "evidence": "rot" },
///   "disks": ["data0", {"id": "data1", "luks": "/dev/disk/by-id/…", "mapper": "data1"}]
/// }
/// ```
///
/// A disk is an id (its key is handed out by `keyrack node disk-key`), or a
/// LUKS2 volume: `id`, the device `luks`, the device-mapper name `mapper`
/// it opens as after unlock, and `"open": false` to only verify the key
/// instead (`mapper` may then be left out).
///
/// `operatorCA` is the CA the operator's certificate must chain to
/// (`operator-ca.pem` from `keyrack operator init`): every ticket and commit
/// the node acts on carries a signature it checks against it.
/// `deniedSerials` lists device certificates (serial numbers in hex) whose
/// peers are refused at the TLS handshake; the list is read again on SIGHUP.
///
/// `adminListen` also serves the admin API on the network, to operator
/// certificates only (mutual TLS 1.3; ``AdminNetwork``); a disk key is not
/// answered there unless `"allowNetworkDiskKey": true`. `metricsListen`
/// serves Prometheus metrics (`GET /metrics`, plain HTTP: they hold no secret).
///
/// Relative paths are relative to the file's directory. Unknown keys are
/// refused, so a misspelt field is an error rather than a silent default.
/// `evidence` is `rot` (a measurement log signed by the software root of
/// trust, the default), `software-tee:DIR` (quotes from a software TEE made
/// by `keyrack tee init`) or `tdx` (configfs-tsm inside a TD).
public struct NodeConfiguration: Sendable, Equatable {
    /// This node's platform id; it must match its device certificate.
    public var platform: PlatformId
    /// The rack this node belongs to.
    public var rackId: RackId
    /// The device key (software root of trust, mode 0600).
    public var deviceKey: String
    /// The device certificate (PEM), issued by the intermediate.
    public var certificate: String
    /// The manufacturing intermediate CA certificate (PEM).
    public var intermediate: String
    /// The manufacturing root certificate (PEM): every peer must chain to it.
    public var root: String
    /// The operator CA (PEM: intermediate, then root) the operator's signatures must chain to.
    public var operatorCA: String
    /// Device certificate serial numbers (lower-case hex, no leading zeros) refused as peers.
    public var deniedSerials: Set<String>
    /// The address peers connect to.
    public var listen: PeerAddress
    /// Where the other nodes of the rack listen, by platform id.
    public var peers: [PlatformId: PeerAddress]
    /// The ledger's two directories.
    public var ledger: [String]
    /// The admin API's Unix socket (created mode 0600).
    public var admin: String
    /// Where the admin API also listens on the network (`adminListen`):
    /// mutual TLS 1.3, operator certificates only (``AdminNetwork``).
    public var adminListen: PeerAddress?
    /// Whether a disk key may be asked for over the network (`allowNetworkDiskKey`,
    /// default false: a disk key does not leave the machine).
    public var allowNetworkDiskKey: Bool
    /// Where Prometheus metrics are served (`metricsListen`, plain HTTP `GET /metrics`).
    public var metricsListen: PeerAddress?
    /// The measurement policy file peers are appraised against.
    public var policy: String
    /// How this node produces its own evidence.
    public var evidence: String
    /// The disks this node unlocks (their ids feed the disk-key derivation), LUKS2 volumes included.
    public var disks: [String]
    /// The disks that are LUKS2 volumes (the node opens and re-keys them).
    public var volumes: [LuksVolume]

    /// A configuration from its parts.
    public init(
        platform: PlatformId,
        rackId: RackId,
        deviceKey: String,
        certificate: String,
        intermediate: String,
        root: String,
        operatorCA: String,
        deniedSerials: Set<String> = [],
        listen: PeerAddress,
        peers: [PlatformId: PeerAddress],
        ledger: [String],
        admin: String,
        adminListen: PeerAddress? = nil,
        allowNetworkDiskKey: Bool = false,
        metricsListen: PeerAddress? = nil,
        policy: String,
        evidence: String = "rot",
        disks: [String] = [],
        volumes: [LuksVolume] = []
    ) {
        self.platform = platform
        self.rackId = rackId
        self.deviceKey = deviceKey
        self.certificate = certificate
        self.intermediate = intermediate
        self.root = root
        self.operatorCA = operatorCA
        self.deniedSerials = deniedSerials
        self.listen = listen
        self.peers = peers
        self.ledger = ledger
        self.admin = admin
        self.adminListen = adminListen
        self.allowNetworkDiskKey = allowNetworkDiskKey
        self.metricsListen = metricsListen
        self.policy = policy
        self.evidence = evidence
        self.disks = disks + volumes.map(\.disk).filter { !disks.contains($0) }
        self.volumes = volumes
    }

    /// Reads and checks the file at `path`.
    public init(contentsOf path: String) throws(NodeConfigurationError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeConfigurationError(.unreadable, "cannot read the node configuration \(path)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        try self.init(json: data, relativeTo: base)
    }

    /// Parses `json`, resolving relative paths against `base`.
    public init(json: Data, relativeTo base: URL) throws(NodeConfigurationError) {
        let reader = try JSONFields<NodeConfigurationErrorCode>(json, what: "the node configuration")
        try reader.refuseUnknownKeys([
            "platform", "rackId", "identity", "listen", "peers", "ledger", "admin", "adminListen",
            "allowNetworkDiskKey", "metricsListen", "attestation", "disks",
        ])
        platform = try Self.platformId(try reader.string("platform"), field: "platform")
        func resolve(_ path: String) -> String {
            path.hasPrefix("/") ? path : base.appendingPathComponent(path).standardizedFileURL.path
        }
        guard let rack = [UInt8](hex: try reader.string("rackId")).flatMap({ RackId(bytes: $0) }) else {
            throw NodeConfigurationError(.invalid, "rackId must be \(RackId.byteCount) bytes in hex")
        }
        rackId = rack
        let identity = try reader.object("identity")
        try identity.refuseUnknownKeys(["key", "certificate", "intermediate", "root", "operatorCA", "deniedSerials"])
        deviceKey = resolve(try identity.string("key"))
        certificate = resolve(try identity.string("certificate"))
        intermediate = resolve(try identity.string("intermediate"))
        root = resolve(try identity.string("root"))
        operatorCA = resolve(try identity.string("operatorCA"))
        deniedSerials = try Self.serials(identity.object["deniedSerials"])
        listen = try PeerAddress(parsing: try reader.string("listen"), field: "listen")
        var peers: [PlatformId: PeerAddress] = [:]
        for (id, address) in try reader.optionalObject("peers")?.object ?? [:] {
            guard let address = address as? String else {
                throw NodeConfigurationError(.invalid, "peers.\(id) must be a \"host:port\" string")
            }
            peers[try Self.platformId(id, field: "peers")] = try PeerAddress(parsing: address, field: "peers.\(id)")
        }
        peers[platform] = nil
        self.peers = peers
        let ledger = try reader.strings("ledger").map(resolve)
        guard ledger.count == 2, ledger[0] != ledger[1] else {
            throw NodeConfigurationError(.invalid, "ledger must list two different directories (on different disks)")
        }
        self.ledger = ledger
        admin = resolve(try reader.string("admin"))
        adminListen = try reader.optionalString("adminListen").map { (text) throws(NodeConfigurationError) in
            try PeerAddress(parsing: text, field: "adminListen")
        }
        metricsListen = try reader.optionalString("metricsListen").map { (text) throws(NodeConfigurationError) in
            try PeerAddress(parsing: text, field: "metricsListen")
        }
        switch reader.object["allowNetworkDiskKey"] {
        case nil: allowNetworkDiskKey = false
        case let flag as Bool: allowNetworkDiskKey = flag
        default: throw NodeConfigurationError(.invalid, "allowNetworkDiskKey must be true or false")
        }
        if allowNetworkDiskKey, adminListen == nil {
            throw NodeConfigurationError(.invalid, "allowNetworkDiskKey is set but there is no adminListen")
        }
        let bound = [("listen", listen), ("adminListen", adminListen), ("metricsListen", metricsListen)]
            .compactMap { name, address in address.map { (name, $0) } }
        for (index, (name, address)) in bound.enumerated() {
            if let clash = bound[..<index].first(where: { $0.1 == address && address.port != 0 }) {
                throw NodeConfigurationError(.invalid, "\(name) and \(clash.0) are both \(address)")
            }
        }
        let attestation = try reader.object("attestation")
        try attestation.refuseUnknownKeys(["policy", "evidence"])
        policy = resolve(try attestation.string("policy"))
        let evidence = try attestation.optionalString("evidence") ?? "rot"
        if evidence.hasPrefix("software-tee:") {
            self.evidence = "software-tee:" + resolve(String(evidence.dropFirst("software-tee:".count)))
        } else {
            guard evidence == "rot" || evidence == "tdx" else {
                throw NodeConfigurationError(.invalid, "attestation.evidence must be rot, software-tee:DIR or tdx")
            }
            self.evidence = evidence
        }
        (disks, volumes) = try Self.disks(reader.object["disks"], resolve: resolve)
    }

    /// Parses `deniedSerials`: hex serial numbers, normalised to lower case without leading zeros.
    static func serials(_ value: Any?) throws(NodeConfigurationError) -> Set<String> {
        guard let value else { return [] }
        guard let list = value as? [String] else {
            throw NodeConfigurationError(.invalid, "identity.deniedSerials must be a list of hex serial numbers")
        }
        var serials = Set<String>()
        for text in list {
            let cleaned = text.lowercased().replacingOccurrences(of: ":", with: "")
            guard !cleaned.isEmpty, cleaned.count <= 40, cleaned.allSatisfy({ $0.isHexDigit }) else {
                throw NodeConfigurationError(
                    .invalid, "identity.deniedSerials: '\(text)' is not a serial number in hex (at most 20 bytes)")
            }
            let trimmed = cleaned.drop(while: { $0 == "0" })
            serials.insert(trimmed.isEmpty ? "0" : String(trimmed))
        }
        return serials
    }

    /// A certificate serial number as ``deniedSerials`` holds it.
    public static func serialText(_ bytes: some Collection<UInt8>) -> String {
        let text = Array(bytes).hexString.drop(while: { $0 == "0" })
        return text.isEmpty ? "0" : String(text)
    }

    /// Parses `disks`: ids, or LUKS2 volume objects.
    static func disks(_ value: Any?, resolve: (String) -> String) throws(NodeConfigurationError) -> (
        [String], [LuksVolume]
    ) {
        guard let value else { return ([], []) }
        guard let entries = value as? [Any] else {
            throw NodeConfigurationError(.invalid, "'disks' must be a list of disk ids or LUKS2 volume objects")
        }
        var disks: [String] = []
        var volumes: [LuksVolume] = []
        for (index, entry) in entries.enumerated() {
            if let id = entry as? String {
                disks.append(id)
                continue
            }
            guard let object = entry as? [String: Any] else {
                throw NodeConfigurationError(.invalid, "disks[\(index)] must be a disk id or an object")
            }
            let fields = JSONFields<NodeConfigurationErrorCode>(object: object, path: "disks[\(index)]")
            try fields.refuseUnknownKeys(["id", "luks", "mapper", "open"])
            let id = try fields.string("id")
            let device = resolve(try fields.string("luks"))
            let mapper = try fields.optionalString("mapper")
            var open = true
            if let flag = object["open"] {
                guard let flag = flag as? Bool else {
                    throw NodeConfigurationError(.invalid, "disks[\(index)].open must be true or false")
                }
                open = flag
            }
            if let mapper {
                let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")
                guard mapper.count <= 127, mapper.allSatisfy(allowed.contains), mapper != ".", mapper != ".." else {
                    throw NodeConfigurationError(
                        .invalid,
                        "disks[\(index)].mapper must be a device-mapper name (letters, digits, - _ . +; at most 127)")
                }
            } else if open {
                throw NodeConfigurationError(
                    .missing,
                    "disks[\(index)].mapper is needed to open the volume (or set \"open\": false to only verify its key)"
                )
            }
            disks.append(id)
            volumes.append(LuksVolume(disk: id, device: device, mapper: mapper, open: open))
        }
        guard Set(disks).count == disks.count, disks.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 255 }) else {
            throw NodeConfigurationError(.invalid, "disks must be distinct, non-empty ids of at most 255 bytes")
        }
        let mappers = volumes.compactMap(\.mapper)
        guard Set(mappers).count == mappers.count, Set(volumes.map(\.device)).count == volumes.count else {
            throw NodeConfigurationError(.invalid, "two LUKS2 volumes name the same device or mapper")
        }
        return (disks, volumes)
    }

    /// The file's JSON (absolute paths).
    public func json() -> Data {
        let object: [String: Any] = [
            "platform": platform.description,
            "rackId": rackId.description,
            "identity": [
                "key": deviceKey, "certificate": certificate, "intermediate": intermediate, "root": root,
                "operatorCA": operatorCA, "deniedSerials": deniedSerials.sorted(),
            ] as [String: Any],
            "listen": listen.description,
            "peers": Dictionary(uniqueKeysWithValues: peers.map { ($0.key.description, $0.value.description) }),
            "ledger": ledger,
            "admin": admin,
            "allowNetworkDiskKey": allowNetworkDiskKey,
            "attestation": ["policy": policy, "evidence": evidence],
            "disks": disks.map { disk -> Any in
                guard let volume = volumes.first(where: { $0.disk == disk }) else { return disk }
                var object: [String: Any] = ["id": disk, "luks": volume.device, "open": volume.open]
                if let mapper = volume.mapper { object["mapper"] = mapper }
                return object
            },
        ]
        var complete = object
        if let adminListen { complete["adminListen"] = adminListen.description }
        if let metricsListen { complete["metricsListen"] = metricsListen.description }
        // Only strings, booleans, arrays and dictionaries of them: serialization cannot fail.
        return (try? JSONSerialization.data(withJSONObject: complete, options: [.prettyPrinted, .sortedKeys])) ?? Data()
    }

    /// Parses `part:serial`.
    public static func platformId(_ text: String, field: String) throws(NodeConfigurationError) -> PlatformId {
        guard let id = PlatformId(parsing: text), Configuration.isValid(id) else {
            throw NodeConfigurationError(.invalid, "\(field): '\(text)' is not a platform id (part:serial)")
        }
        return id
    }
}

/// A peer's `host:port`.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    /// The host name or IP address.
    public let host: String
    /// The TCP port.
    public let port: Int

    /// An address from its parts.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (IPv6 as `[addr]:port`).
    public init(parsing text: String, field: String = "address") throws(NodeConfigurationError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw NodeConfigurationError(.invalid, "\(field): '\(text)' is not host:port")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw NodeConfigurationError(.invalid, "\(field): '\(text)' has no host") }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A node configuration that cannot be used: the reason names the field.
public typealias NodeConfigurationError = CodedError<NodeConfigurationErrorCode>

/// The codes of ``NodeConfigurationError``.
public struct NodeConfigurationErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// The configuration file does not exist or cannot be read.
    public static let unreadable = NodeConfigurationErrorCode("NODE-CONFIG-UNREADABLE")
    /// The configuration is not valid JSON, or not a JSON object.
    public static let syntax = NodeConfigurationErrorCode("NODE-CONFIG-SYNTAX")
    /// A field that must be there is missing.
    public static let missing = NodeConfigurationErrorCode("NODE-CONFIG-MISSING")
    /// A field has a value that is not allowed (type, form, duplicates).
    public static let invalid = NodeConfigurationErrorCode("NODE-CONFIG-INVALID")
    /// A field is not one the configuration has.
    public static let unknownField = NodeConfigurationErrorCode("NODE-CONFIG-UNKNOWN-FIELD")
}
