import Foundation
import TrustQuorum

/// What the node agent keeps beside the trust-quorum ledger, in the same two
/// directories: where peers listen (as the operator told it, so that a node
/// added after its neighbours' configuration files were written is still
/// found after a full restart), the epoch each disk's data is keyed under
/// (so that re-keying is reported from the epoch the disk really uses, even
/// after several commits), and the alarms raised (so that they outlive a
/// restart). None of it is secret; it is written like the ledger — a
/// temporary file, fsync, rename, fsync of the directory — and the higher
/// valid generation wins at load.
public struct AgentState: Codable, Equatable, Sendable {
    /// Incremented on every write.
    public var generation: UInt64 = 0
    /// Peer addresses learnt from the operator (`setPeers`): platform id → host:port.
    public var peers: [String: String] = [:]
    /// Disk id → the epoch its data is keyed under.
    public var disks: [String: Epoch] = [:]
    /// Alarms raised, oldest first (at most ``maximumAlarms``).
    public var alarms: [String] = []
    /// LUKS2 volumes being re-keyed: disk id → the plan, written before each step.
    public var rekeys: [String: RekeyPlan] = [:]

    /// An empty state (a new node).
    public init() {}

    static let fileName = "agent.json"
    /// How many alarms are kept.
    public static let maximumAlarms = 100

    /// What loading found: the newest valid copy (or an empty state) and the
    /// copies that exist but could not be used.
    struct Loaded: Equatable {
        var state: AgentState
        var problems: [String]
    }

    /// Reads both copies in `directories`. Never throws: losing this file
    /// loses no secret and no share, so an unusable copy is reported and the
    /// node starts from what its configuration says.
    static func load(from directories: [URL]) -> Loaded {
        let copies = readCopies(of: fileName, in: directories) { bytes throws(CopyRefused) in
            guard let state = try? JSONDecoder().decode(AgentState.self, from: Data(bytes)) else {
                throw CopyRefused(reason: "not a valid agent state file")
            }
            return (state.generation, state)
        }
        return Loaded(
            state: copies.newest?.value ?? AgentState(),
            problems: copies.problems.map { "\($0.path): \($0.reason)" })
    }

    /// Writes this state (its generation already incremented by the caller) to both directories.
    func save(to directories: [URL]) throws(AtomicFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let bytes = try? encoder.encode(self) else {
            throw AtomicFileError(.encode, "cannot encode the agent state")
        }
        for directory in directories {
            try writeAtomically(Array(bytes), to: directory, name: Self.fileName)
        }
    }
}

extension AgentState {
    /// Decodes a file, including one written before a field existed (it starts empty).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        generation = try container.decode(UInt64.self, forKey: .generation)
        peers = try container.decodeIfPresent([String: String].self, forKey: .peers) ?? [:]
        disks = try container.decodeIfPresent([String: Epoch].self, forKey: .disks) ?? [:]
        alarms = try container.decodeIfPresent([String].self, forKey: .alarms) ?? []
        rekeys = try container.decodeIfPresent([String: RekeyPlan].self, forKey: .rekeys) ?? [:]
    }
}
