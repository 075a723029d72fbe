import Foundation
import KeyrackCore
import TrustQuorum

/// An admin request once it is known to be well formed: what the node's
/// ``AgentCore`` acts on. The socket decodes an ``AdminRequest`` frame into
/// one of these at the edge (``init(_:localPlatform:)``), so nothing past
/// it re-checks which optional field an operation needs.
public enum AdminCommand: Sendable, Equatable {
    /// The node's ``NodeStatus``.
    case status
    /// Coordinate the reconfiguration of an operator-signed ticket.
    case reconfigure(SignedTicket)
    /// Commit a prepared epoch under the operator's commit signature.
    case commit(Epoch, OperatorSignature)
    /// Commit an operator-signed configuration this node may not have prepared.
    case prepareAndCommit(SignedConfiguration)
    /// The operator-signed configuration that removed this node.
    case expunge(SignedConfiguration)
    /// Where peers listen (the node's own entry already dropped).
    case setPeers([PlatformId: PeerAddress])
    /// A disk's key, of `epoch` or of the latest committed one, derived under `scheme`.
    case diskKey(disk: String, epoch: Epoch?, scheme: DiskKeyScheme = .current)
    /// The operator re-keyed `disk` to `epoch`.
    case diskRekeyed(disk: String, epoch: Epoch)
    /// Bind the LUKS2 volume `disk`, which `existingKey` opens now, to the rack.
    /// Answered by the node's volume manager.
    case luksBind(disk: String, existingKey: SecretBytes)
    /// Create the LUKS2 volume `disk` with a rack-derived key. Answered by the node's volume manager.
    case luksFormat(disk: String)
    /// Check and, unless `dryRun`, put in force an operator-signed
    /// measurement policy. Answered by the node's ``NodePolicyStore``.
    case setPolicy(SignedNodePolicy, dryRun: Bool)

    /// Parses a request from the wire; refuses one that lacks what its
    /// operation needs or whose peers are not `part:serial` → `host:port`
    /// (``AdminError/Code/request``). Entries for `localPlatform` are dropped.
    public init(_ request: AdminRequest, localPlatform: PlatformId) throws(AdminError) {
        func required<Value>(_ value: Value?, _ field: String) throws(AdminError) -> Value {
            guard let value else { throw AdminError(.request, "the request lacks '\(field)'") }
            return value
        }
        switch request.operation {
        case .status:
            self = .status
        case .reconfigure:
            self = .reconfigure(try required(request.ticket, "ticket"))
        case .commit:
            self = .commit(try required(request.epoch, "epoch"), try required(request.signature, "signature"))
        case .prepareAndCommit:
            self = .prepareAndCommit(
                SignedConfiguration(
                    try required(request.configuration, "configuration"),
                    signature: try required(request.signature, "signature")))
        case .expunge:
            self = .expunge(
                SignedConfiguration(
                    try required(request.configuration, "configuration"),
                    signature: try required(request.signature, "signature")))
        case .setPeers:
            self = .setPeers(try Self.peers(try required(request.peers, "peers"), localPlatform: localPlatform))
        case .diskKey:
            self = .diskKey(
                disk: try required(request.disk, "disk"), epoch: request.epoch, scheme: request.keyScheme ?? .current)
        case .diskRekeyed:
            self = .diskRekeyed(disk: try required(request.disk, "disk"), epoch: try required(request.epoch, "epoch"))
        case .luksBind:
            let disk = try required(request.disk, "disk")
            guard var decoded = request.existingKey.flatMap({ Data(base64Encoded: $0) }), !decoded.isEmpty else {
                throw AdminError(.request, "the request lacks 'existingKey' (base64)")
            }
            self = .luksBind(disk: disk, existingKey: SecretBytes(decoded))
            decoded.resetBytes(in: 0..<decoded.count)
        case .luksFormat:
            self = .luksFormat(disk: try required(request.disk, "disk"))
        case .setPolicy:
            self = .setPolicy(try required(request.policy, "policy"), dryRun: request.dryRun ?? false)
        }
    }

    /// `part:serial` → `host:port`, without `localPlatform`.
    private static func peers(_ text: [String: String], localPlatform: PlatformId) throws(AdminError)
        -> [PlatformId: PeerAddress]
    {
        var peers: [PlatformId: PeerAddress] = [:]
        for (id, address) in text {
            let platform: PlatformId
            let parsed: PeerAddress
            do {
                platform = try NodeConfiguration.platformId(id, field: "peers")
                parsed = try PeerAddress(parsing: address, field: "peers.\(id)")
            } catch {
                throw AdminError(.request, error.reason)
            }
            guard platform != localPlatform else { continue }
            peers[platform] = parsed
        }
        return peers
    }

    /// Whether a halted node still answers it.
    var allowedWhenHalted: Bool { self == .status }
}

extension AdminRequest {
    /// The wire form of `command`.
    public init(command: AdminCommand) {
        switch command {
        case .status: self.init(.status)
        case .reconfigure(let ticket): self.init(.reconfigure, ticket: ticket)
        case .commit(let epoch, let signature): self.init(.commit, epoch: epoch, signature: signature)
        case .prepareAndCommit(let signed):
            self.init(.prepareAndCommit, configuration: signed.configuration, signature: signed.signature)
        case .expunge(let signed):
            self.init(.expunge, configuration: signed.configuration, signature: signed.signature)
        case .setPeers(let peers):
            self.init(
                .setPeers,
                peers: Dictionary(uniqueKeysWithValues: peers.map { ($0.key.description, $0.value.description) }))
        case .diskKey(let disk, let epoch, let scheme):
            self.init(.diskKey, epoch: epoch, disk: disk, keyScheme: scheme == .current ? nil : scheme)
        case .diskRekeyed(let disk, let epoch): self.init(.diskRekeyed, epoch: epoch, disk: disk)
        case .luksBind(let disk, let existingKey):
            self.init(
                .luksBind, disk: disk,
                existingKey: existingKey.withUnsafeBytes { Data($0) }.base64EncodedString())
        case .luksFormat(let disk): self.init(.luksFormat, disk: disk)
        case .setPolicy(let policy, let dryRun): self.init(.setPolicy, policy: policy, dryRun: dryRun ? true : nil)
        }
    }
}
