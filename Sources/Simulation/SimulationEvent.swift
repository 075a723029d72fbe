/// The kinds of fault the simulator may inject.
public struct FaultSet: OptionSet, Sendable, Hashable, Codable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Messages are lost.
    public static let drop = FaultSet(rawValue: 1 << 0)
    /// Messages on a link are delivered out of order.
    public static let reorder = FaultSet(rawValue: 1 << 1)
    /// Messages are delivered twice.
    public static let duplicate = FaultSet(rawValue: 1 << 2)
    /// The network splits in two, and heals.
    public static let partition = FaultSet(rawValue: 1 << 3)
    /// Nodes crash (losing volatile state), restart, or stay down for several epochs.
    public static let crash = FaultSet(rawValue: 1 << 4)
    /// One node (a member, later perhaps a removed node that kept its key)
    /// forges `Expunged`, `CommitAdvance` and `Prepare` at any epoch, sends
    /// shares that fail their digest and replays old signed messages.
    public static let byzantine = FaultSet(rawValue: 1 << 5)

    /// Every network and crash fault (`all` on the command line; the
    /// Byzantine node is named on its own: `all,byzantine`).
    public static let all: FaultSet = [.drop, .reorder, .duplicate, .partition, .crash]

    /// The names used on the command line, in order.
    public static let names: [(String, FaultSet)] = [
        ("drop", .drop), ("reorder", .reorder), ("duplicate", .duplicate), ("partition", .partition),
        ("crash", .crash), ("byzantine", .byzantine),
    ]

    /// Parses `drop,reorder,…` (or `all`, or `none`); `nil` on an unknown name.
    public init?(parsing text: String) {
        var set: FaultSet = []
        for word in text.split(separator: ",").map({ $0.trimmingCharacters() }) where !word.isEmpty {
            if word == "all" {
                set.formUnion(.all)
            } else if word == "none" {
                continue
            } else if let match = Self.names.first(where: { $0.0 == word }) {
                set.formUnion(match.1)
            } else {
                return nil
            }
        }
        self = set
    }

    /// The names of the faults in the set.
    public var names: [String] { Self.names.filter { contains($0.1) }.map(\.0) }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// One step of a simulation. A run is its options plus this list; replaying
/// the list reproduces the run exactly. Nodes are named by their index.
public enum SimulationEvent: Sendable, Equatable, Codable {
    /// Deliver the message at the head of the link `from → to`.
    case deliver(from: Int, to: Int)
    /// Lose the message at the head of the link.
    case drop(from: Int, to: Int)
    /// Deliver the head of the link and leave a copy at the head.
    case duplicate(from: Int, to: Int)
    /// Move the head of the link to its back.
    case reorder(from: Int, to: Int)
    /// Split the network: nodes whose bit is set in `mask` on one side.
    case partition(mask: UInt64)
    /// Join the network again.
    case heal
    /// The node crashes: volatile state lost, persisted state kept.
    case crash(node: Int)
    /// The node crashes and stays down until the control plane has moved this many epochs on.
    case crashForEpochs(node: Int, epochs: Int)
    /// The node starts again from its persisted state.
    case restart(node: Int)
    /// Every link is closed and opened again (nodes resend on connect).
    case reconnectAll
    /// The control plane polls the coordinator and its clock ticks.
    case tick
    /// The operator rotates the secret (same members).
    case rotate
    /// The operator adds a node.
    case addNode(node: Int)
    /// The operator removes a node.
    case removeNode(node: Int)
    /// A node loads the rack secret of an epoch.
    case loadSecret(node: Int, epoch: UInt64)
    /// The operator upgrades the rack from LRTQ to the trust quorum (same members).
    case upgradeFromLrtq
    /// The Byzantine node sends `target` the forgery made from `seed`.
    case forge(target: Int, seed: UInt64)
}
