import Synchronization
import TrustQuorum

/// A disk of the node's configuration that is a LUKS2 volume:
/// `{"id": "data0", "luks": "/dev/disk/by-id/…", "mapper": "data0", "open": true}`.
public struct LuksVolume: Sendable, Equatable {
    /// The disk id (it feeds the disk-key derivation).
    public var disk: String
    /// The block device (or image file) holding the LUKS2 header.
    public var device: String
    /// The device-mapper name it opens as (`/dev/mapper/<mapper>`); required when ``open`` is set.
    public var mapper: String?
    /// Whether unlocking opens the mapping (`cryptsetup open`) or only verifies the key (`--test-passphrase`).
    public var open: Bool

    /// A volume from its parts.
    public init(disk: String, device: String, mapper: String? = nil, open: Bool = true) {
        self.disk = disk
        self.device = device
        self.mapper = mapper
        self.open = open
    }
}

/// What `node status` says about one LUKS2 volume.
public struct VolumeStatus: Codable, Sendable, Equatable {
    /// Where the volume stands.
    public enum State: String, Codable, Sendable {
        /// The rack secret is not loaded yet.
        case locked
        /// The header carries no keyrack token (`keyrack node luks-bind` or `luks-format`).
        case unbound
        /// Opened as `/dev/mapper/<mapper>` with this node's key.
        case opened
        /// This node's key opens it (verified; no mapping, `"open": false`).
        case verified
        /// Being re-keyed to the latest committed epoch (``step`` says where).
        case rekeying
        /// It could not be opened or verified (``problem`` says why).
        case failed
    }

    /// The disk id.
    public var disk: String
    /// The device.
    public var device: String
    /// The device-mapper name, if it is opened.
    public var mapper: String?
    /// Where it stands.
    public var state: State
    /// The epoch whose disk key opens it.
    public var epoch: Epoch?
    /// That key's derivation scheme (``DiskKeyScheme/diskOnly`` until a
    /// volume keyed by an earlier release is re-keyed).
    public var keyScheme: DiskKeyScheme?
    /// The keyslot that key is in.
    public var keyslot: Int?
    /// The re-key step being taken, while ``State/rekeying``.
    public var step: RekeyPlan.Step?
    /// What went wrong (set when failed, or when opened but a re-key could not proceed).
    public var problem: AdminError?

    /// A status from its parts.
    public init(
        disk: String, device: String, mapper: String? = nil, state: State, epoch: Epoch? = nil,
        keyScheme: DiskKeyScheme? = nil, keyslot: Int? = nil, step: RekeyPlan.Step? = nil, problem: AdminError? = nil
    ) {
        self.disk = disk
        self.device = device
        self.mapper = mapper
        self.state = state
        self.epoch = epoch
        self.keyScheme = keyScheme
        self.keyslot = keyslot
        self.step = step
        self.problem = problem
    }
}

/// The latest status of every volume, readable at once from any thread (the node's status answer).
final class VolumeBoard: Sendable {
    private let statuses: Mutex<[VolumeStatus]>

    init(_ volumes: [LuksVolume]) {
        statuses = Mutex(
            volumes.map {
                VolumeStatus(disk: $0.disk, device: $0.device, mapper: $0.open ? $0.mapper : nil, state: .locked)
            })
    }

    var all: [VolumeStatus] { statuses.withLock { $0 } }

    func update(_ disk: String, _ change: (inout VolumeStatus) -> Void) {
        statuses.withLock { all in
            guard let index = all.firstIndex(where: { $0.disk == disk }) else { return }
            change(&all[index])
        }
    }
}
