import Foundation
import KeyrackCore
import TrustQuorum

/// What the node agent keeps beside the trust-quorum ledger, in the same two
/// directories: where peers listen (as the operator told it, so that a node
/// added after its neighbours' configuration files were written is still
/// found after a full restart), the epoch each disk's data is keyed under
/// (so that re-keying is reported from the epoch the disk really uses, even
/// after several commits), and the alarms raised (so that they outlive a
/// restart). None of it is secret, but it is sealed by the root of trust like
/// the ledger (review finding L4: an unauthenticated file let anyone with
/// the disk add peers or push the generation to its end): `agent.sealed` is
/// `KRAS` ‖ version (1) ‖ generation (8 bytes, big-endian) ‖ the AEAD box of
/// the JSON, the header authenticated. It is written like the ledger — a
/// temporary file, fsync, rename, fsync of the directory — and the higher
/// valid generation wins at load. An unsealed `agent.json` from an earlier
/// release is read only when no sealed copy exists (and reported), and
/// removed at the next write.
public struct AgentState: Codable, Equatable, Sendable {
    /// Incremented on every write.
    public var generation: UInt64 = 0
    /// Peer addresses learnt from the operator (`setPeers`): platform id → host:port.
    public var peers: [String: String] = [:]
    /// Disk id → the epoch its data is keyed under.
    public var disks: [String: Epoch] = [:]
    /// Disk id → the scheme of that key; a disk of ``disks`` missing here
    /// was recorded by an earlier release, so its key is
    /// ``DiskKeyScheme/diskOnly``.
    public var diskSchemes: [String: DiskKeyScheme] = [:]
    /// Alarms raised, oldest first (at most ``maximumAlarms``).
    public var alarms: [String] = []
    /// LUKS2 volumes being re-keyed: disk id → the plan, written before each step.
    public var rekeys: [String: RekeyPlan] = [:]

    /// An empty state (a new node).
    public init() {}

    /// The sealed file.
    static let fileName = "agent.sealed"
    /// The unsealed file of earlier releases.
    static let legacyFileName = "agent.json"
    static let magic = Array("KRAS".utf8)
    static let version: UInt8 = 1
    static let purpose = "keyrack agent state v1"
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
    static func load(from directories: [URL], rootOfTrust: any RootOfTrust) -> Loaded {
        let sealed = readCopies(of: fileName, in: directories) { bytes throws(CopyRefused) in
            let state = try open(bytes, rootOfTrust: rootOfTrust)
            return (state.generation, state)
        }
        if sealed.newest != nil || !sealed.problems.isEmpty {
            return Loaded(
                state: sealed.newest?.value ?? AgentState(),
                problems: sealed.problems.map { "\($0.path): \($0.reason)" })
        }
        let legacy = readCopies(of: legacyFileName, in: directories) { bytes throws(CopyRefused) in
            guard let state = try? JSONDecoder().decode(AgentState.self, from: Data(bytes)) else {
                throw CopyRefused(reason: "not a valid agent state file")
            }
            return (state.generation, state)
        }
        var problems = legacy.problems.map { "\($0.path): \($0.reason)" }
        if legacy.newest != nil {
            problems.append(
                "the agent state is an unsealed agent.json from an earlier release; it is sealed at the next write")
        }
        return Loaded(state: legacy.newest?.value ?? AgentState(), problems: problems)
    }

    /// Opens a sealed copy: the header names the generation, the root of trust authenticates both.
    static func open(_ bytes: [UInt8], rootOfTrust: any RootOfTrust) throws(CopyRefused) -> AgentState {
        guard bytes.count >= 13 + 12 + 16, Array(bytes.prefix(4)) == magic else {
            throw CopyRefused(reason: "not a sealed agent state file")
        }
        guard bytes[4] == version else { throw CopyRefused(reason: "unsupported agent state version \(bytes[4])") }
        let generation = UInt64(bigEndianBytes: bytes[5..<13])
        guard
            let plaintext = try? rootOfTrust.open(
                Array(bytes[13...]), purpose: purpose, authenticating: Array(bytes[0..<13])),
            let state = try? plaintext.withUnsafeBytes({ try JSONDecoder().decode(AgentState.self, from: Data($0)) }),
            state.generation == generation
        else {
            throw CopyRefused(reason: "does not open: tampered, truncated, or sealed by another node's root of trust")
        }
        return state
    }

    /// Writes this state (its generation already incremented by the caller),
    /// sealed, to both directories, then removes an unsealed copy of an earlier release.
    func save(to directories: [URL], rootOfTrust: any RootOfTrust) throws(AtomicFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let bytes = try? encoder.encode(self) else {
            throw AtomicFileError(.encode, "cannot encode the agent state")
        }
        let header = Self.magic + [Self.version] + generation.bigEndianBytes
        let sealed: [UInt8]
        do {
            sealed = header + (try rootOfTrust.seal(Array(bytes), purpose: Self.purpose, authenticating: header))
        } catch {
            throw AtomicFileError(.encode, "cannot seal the agent state: \(error.reason)")
        }
        for directory in directories {
            try writeAtomically(sealed, to: directory, name: Self.fileName)
        }
        for directory in directories {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(Self.legacyFileName))
        }
    }
}

extension AgentState {
    /// The next generation, before a write. Saturating: the generation is
    /// sealed, so only 2^64 writes could reach the end, and a trap there
    /// would be a crash loop (review L4).
    mutating func advanceGeneration() {
        generation = generation == .max ? .max : generation + 1
    }

    /// The key `disk` is keyed under, if recorded.
    public func keyed(_ disk: String) -> DiskKeyVersion? {
        disks[disk].map { DiskKeyVersion($0, diskSchemes[disk] ?? .diskOnly) }
    }

    /// Records the key `disk` is keyed under (nil: none).
    public mutating func setKeyed(_ disk: String, _ version: DiskKeyVersion?) {
        disks[disk] = version?.epoch
        diskSchemes[disk] = version?.scheme
    }

    /// Decodes a file, including one written before a field existed (it starts empty).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        generation = try container.decode(UInt64.self, forKey: .generation)
        peers = try container.decodeIfPresent([String: String].self, forKey: .peers) ?? [:]
        disks = try container.decodeIfPresent([String: Epoch].self, forKey: .disks) ?? [:]
        diskSchemes = try container.decodeIfPresent([String: DiskKeyScheme].self, forKey: .diskSchemes) ?? [:]
        alarms = try container.decodeIfPresent([String].self, forKey: .alarms) ?? []
        rekeys = try container.decodeIfPresent([String: RekeyPlan].self, forKey: .rekeys) ?? [:]
    }
}
