import Foundation
import KeyrackCore
import Logging
import NIOPosix
import SecretSharing
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// What the volume manager needs from the node it serves: disk keys, and
/// a durable place for re-key progress (the node's agent state).
public protocol VolumeHost: AnyObject, Sendable {
    /// The disk key of `disk` at `key`'s epoch under its scheme (nil: the latest committed epoch's,
    /// of the current scheme); throws while locked.
    func volumeKey(disk: String, key: DiskKeyVersion?) async throws(VolumeError) -> DiskKey
    /// Writes `plan` (nil: none in progress) and, if given, the key `disk` is keyed under, durably;
    /// throws if the write failed (then the step it precedes is not taken).
    func recordVolume(disk: String, plan: RekeyPlan?, keyed: DiskKeyVersion?) async throws(VolumeError)
}

/// Settings of the volume manager that tests and debug builds change.
public struct VolumeOptions: Sendable {
    /// Where to look for `cryptsetup` (nil: ``Cryptsetup/defaultSearchPath``).
    public var cryptsetupSearchPath: [String]?
    /// Called after each re-key step is taken and before the next is recorded; returning true
    /// stops the manager there, as a crash would (the debug-build crash hook kills the process).
    public var afterStep: (@Sendable (RekeyPlan.Step) -> Bool)?

    /// The defaults.
    public init(cryptsetupSearchPath: [String]? = nil, afterStep: (@Sendable (RekeyPlan.Step) -> Bool)? = nil) {
        self.cryptsetupSearchPath = cryptsetupSearchPath
        self.afterStep = afterStep
    }
}

/// Carries out everything LUKS for one node: after each unlock (at boot and
/// after every commit) it opens or verifies every bound volume with the key
/// its header's keyrack token names, then re-keys each one still under an
/// older epoch following a ``RekeyPlan`` whose progress the host writes
/// before every step; it binds and formats volumes on the operator's
/// request. One operation at a time, in order. A volume that fails is
/// reported and the others go on.
public actor VolumeManager {
    /// The configured volumes.
    public nonisolated let volumes: [LuksVolume]
    let rack: RackId
    let cryptsetup: Cryptsetup?
    let logger: Logger
    let afterStep: (@Sendable (RekeyPlan.Step) -> Bool)?
    nonisolated let board: VolumeBoard
    private weak var host: (any VolumeHost)?
    private var plans: [String: RekeyPlan]
    private var wanted: Epoch?
    private var reconciling: Task<Void, Never>?
    private var tail: Task<Void, Never>?
    private var crashed = false

    /// A manager for `volumes` of `rack`, resuming `plans` (from the agent state). Throws
    /// ``Cryptsetup/missing`` when there are volumes and no `cryptsetup`.
    public init(
        volumes: [LuksVolume], rack: RackId, plans: [String: RekeyPlan], options: VolumeOptions = VolumeOptions(),
        logger: Logger
    ) throws(VolumeError) {
        self.volumes = volumes
        self.rack = rack
        self.logger = logger
        afterStep = options.afterStep
        board = VolumeBoard(volumes)
        self.plans = plans.filter { plan in volumes.contains { $0.disk == plan.key } }
        cryptsetup =
            volumes.isEmpty
            ? nil : try Cryptsetup.locate(searchPath: options.cryptsetupSearchPath ?? Cryptsetup.defaultSearchPath)
    }

    /// Every volume's latest status.
    public nonisolated var statuses: [VolumeStatus] { board.all }

    /// Sets the node whose keys and agent state the manager uses.
    public func attach(_ host: any VolumeHost) { self.host = host }

    /// The node unlocked at `epoch` (at boot, or after a commit): open or
    /// verify every bound volume and re-key it to `epoch`. Returns at once;
    /// the work runs in order with every other operation.
    public nonisolated func unlocked(at epoch: Epoch) {
        Task { await self.request(epoch) }
    }

    /// Opens or verifies every bound volume and re-keys it to `epoch`, as
    /// ``unlocked(at:)`` does, and returns when that is done.
    public func reconcile(at epoch: Epoch) async {
        request(epoch)
        while let running = reconciling { await running.value }
    }

    private func request(_ epoch: Epoch) {
        guard !volumes.isEmpty, !crashed else { return }
        wanted = max(wanted ?? epoch, epoch)
        guard reconciling == nil else { return }
        reconciling = Task {
            while let epoch = self.takeWanted() {
                await self.serialized { await self.reconcileAll(at: epoch) }
            }
        }
    }

    private func takeWanted() -> Epoch? {
        defer { wanted = nil }
        if wanted == nil { reconciling = nil }
        return wanted
    }

    /// Runs `body` after every operation started before it.
    private func serialized<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
        let previous = tail
        let task = Task { () -> T in
            await previous?.value
            return await body()
        }
        tail = Task { _ = await task.value }
        return await task.value
    }

    private func reconcileAll(at latest: Epoch) async {
        for volume in volumes where !crashed {
            do {
                try await reconcile(volume, latest: latest)
            } catch {
                if crashed { return }
                fail(volume, error)
            }
        }
    }

    private func fail(_ volume: LuksVolume, _ error: VolumeError) {
        logger.error(
            "volume problem", metadata: ["disk": "\(volume.disk)", "device": "\(volume.device)", "error": "\(error)"])
        board.update(volume.disk) {
            $0.state = .failed
            $0.step = nil
            $0.problem = error.adminError
        }
    }

    // MARK: - Opening and re-keying

    private func requireCryptsetup() throws(VolumeError) -> Cryptsetup {
        guard let cryptsetup else { throw Cryptsetup.missing }
        return cryptsetup
    }

    private func requireHost() throws(VolumeError) -> any VolumeHost {
        guard let host else { throw VolumeError(.locked, "the node is stopping") }
        return host
    }

    private func key(_ disk: String, _ version: DiskKeyVersion?) async throws(VolumeError) -> DiskKey {
        try await requireHost().volumeKey(disk: disk, key: version)
    }

    private func reconcile(_ volume: LuksVolume, latest: Epoch) async throws(VolumeError) {
        let cryptsetup = try requireCryptsetup()
        // A re-key leads to the latest epoch; a commit during it is followed by another (bounded: each moves forward).
        for _ in 0..<4 {
            let header = try await blocking { () throws(VolumeError) in try cryptsetup.metadata(volume.device) }
            let bindings = try header.bindings(rack: rack, disk: volume.disk, latest: latest)
            guard let newest = bindings.first else {
                guard plans[volume.disk] == nil else {
                    throw VolumeError(.unexpected, "a re-key is in progress but the header has no keyrack token")
                }
                board.update(volume.disk) {
                    $0.state = .unbound
                    $0.epoch = nil
                    $0.keyScheme = nil
                    $0.keyslot = nil
                    $0.problem =
                        VolumeError(
                            .unbound, "not bound yet: keyrack node luks-bind (or luks-format for an empty device)"
                        ).adminError
                }
                return
            }
            let opened = try await openWithNewest(volume, bindings, cryptsetup)
            if var plan = plans[volume.disk] {
                try await execute(&plan, volume, cryptsetup)
                continue
            }
            if bindings.count > 1 {
                throw VolumeError(
                    .unexpected,
                    "the header has \(bindings.count) keyrack tokens for '\(volume.disk)' and this node has no re-key "
                        + "in progress for it; opened with \(opened.version)'s key, not re-keyed")
            }
            // Onto the latest epoch, and from an earlier release's disk-only key onto the platform-bound one.
            let target = DiskKeyVersion(latest, .current)
            if opened.version < target {
                var plan = try RekeyPlan(
                    disk: volume.disk, current: newest.token, currentToken: newest.id, to: target, header: header)
                logger.notice(
                    "re-keying volume",
                    metadata: [
                        "disk": "\(volume.disk)", "from": "\(plan.fromVersion)", "to": "\(plan.toVersion)",
                    ])
                try await execute(&plan, volume, cryptsetup)
                continue
            }
            return
        }
    }

    /// Opens (or verifies) `volume` with the newest binding whose key opens it.
    private func openWithNewest(
        _ volume: LuksVolume, _ bindings: [(id: Int, token: KeyrackToken)], _ cryptsetup: Cryptsetup
    ) async throws(VolumeError) -> KeyrackToken {
        for binding in bindings {
            let key = try await key(volume.disk, binding.token.version).key
            let slot = binding.token.keyslot
            let opens = try await blocking { () throws(VolumeError) in
                try cryptsetup.test(volume.device, key: key, keyslot: slot) == slot
            }
            guard opens else { continue }
            var state = VolumeStatus.State.verified
            if volume.open, let mapper = volume.mapper {
                try await blocking { () throws(VolumeError) in
                    if try !cryptsetup.isActive(mapper) {
                        try cryptsetup.open(volume.device, mapper: mapper, key: key, keyslot: slot)
                    }
                }
                state = .opened
            }
            logger.notice(
                state == .opened ? "volume opened" : "volume verified",
                metadata: [
                    "disk": "\(volume.disk)", "epoch": "\(binding.token.epoch)", "scheme": "\(binding.token.scheme)",
                    "keyslot": "\(slot)",
                ])
            board.update(volume.disk) {
                $0.state = state
                $0.epoch = binding.token.epoch
                $0.keyScheme = binding.token.scheme
                $0.keyslot = slot
                $0.step = nil
                $0.problem = nil
            }
            return binding.token
        }
        throw VolumeError(
            .key,
            "no keyrack keyslot of \(volume.device) opens with this node's key of the epoch its token names")
    }

    /// Takes the plan's remaining steps, writing the plan before each.
    private func execute(_ plan: inout RekeyPlan, _ volume: LuksVolume, _ cryptsetup: Cryptsetup)
        async throws(VolumeError)
    {
        let host = try requireHost()
        while true {
            try await host.recordVolume(disk: volume.disk, plan: plan, keyed: nil)
            plans[volume.disk] = plan
            let step = plan.step
            board.update(volume.disk) {
                $0.state = .rekeying
                $0.step = step
            }
            let header = try await blocking { () throws(VolumeError) in try cryptsetup.metadata(volume.device) }
            let action = try plan.action(for: header, rack: rack)
            try await perform(action, plan, volume, cryptsetup, host)
            logger.info(
                "re-key step done",
                metadata: ["disk": "\(volume.disk)", "step": "\(step.rawValue)", "to": "\(plan.toVersion)"])
            if let afterStep, afterStep(step) {
                crashed = true
                throw VolumeError(.unexpected, "stopped after \(step.rawValue) (test hook)")
            }
            guard plan.advance() else { break }
        }
        plans[volume.disk] = nil
        let done = plan
        board.update(volume.disk) {
            $0.state = volume.open && volume.mapper != nil ? .opened : .verified
            $0.epoch = done.to
            $0.keyScheme = done.toScheme
            $0.keyslot = done.newKeyslot
            $0.step = nil
            $0.problem = nil
        }
        logger.notice(
            "volume re-keyed",
            metadata: ["disk": "\(volume.disk)", "from": "\(plan.fromVersion)", "to": "\(plan.toVersion)"])
    }

    private func perform(
        _ action: RekeyPlan.Action, _ plan: RekeyPlan, _ volume: LuksVolume, _ cryptsetup: Cryptsetup,
        _ host: any VolumeHost
    ) async throws(VolumeError) {
        let device = volume.device
        switch action {
        case .nothing:
            return
        case .addKeyslot(let keyslot, let version, let authorisedBy):
            let new = try await key(volume.disk, version).key
            let old = try await key(volume.disk, authorisedBy).key
            try await blocking { () throws(VolumeError) in
                try cryptsetup.addKey(device, existing: old, new: new, keyslot: keyslot)
            }
        case .confirmKeyslot(let keyslot, let version), .verify(let keyslot, let version):
            let new = try await key(volume.disk, version).key
            let opens = try await blocking { () throws(VolumeError) in
                try cryptsetup.test(device, key: new, keyslot: keyslot) == keyslot
            }
            guard opens else {
                throw VolumeError(.key, "keyslot \(keyslot) of \(device) does not open with \(version)'s key")
            }
        case .importToken(let id, let token):
            try await blocking { () throws(VolumeError) in try cryptsetup.importToken(device, id: id, token: token) }
        case .removeToken(let id):
            try await blocking { () throws(VolumeError) in try cryptsetup.removeToken(device, id: id) }
        case .removeKeyslot(let keyslot, let holding, let authorisedBy):
            let old = try await key(volume.disk, holding).key
            let new = try await key(volume.disk, authorisedBy).key
            try await blocking { () throws(VolumeError) in
                // Only a keyslot that holds the old key is removed: never one Keyrack did not enroll.
                guard try cryptsetup.test(device, key: old, keyslot: keyslot) == keyslot else {
                    throw VolumeError(
                        .unexpected,
                        "keyslot \(keyslot) of \(device) does not hold \(holding)'s key; left in place")
                }
                try cryptsetup.killSlot(device, keyslot: keyslot, authorisedBy: new)
            }
        case .record(let version):
            try await host.recordVolume(disk: volume.disk, plan: nil, keyed: version)
        }
    }

    // MARK: - Binding and formatting

    private func volume(_ disk: String) throws(VolumeError) -> LuksVolume {
        guard let volume = volumes.first(where: { $0.disk == disk }) else {
            throw VolumeError(.unknown, "'\(disk)' is not a LUKS2 volume of this node's configuration")
        }
        return volume
    }

    /// Enrolls the latest committed epoch's disk key in a new keyslot of
    /// `disk`, authorised by `existingKey` (a passphrase or key file that
    /// opens the volume now), writes its keyrack token, and opens or
    /// verifies the volume. A bind interrupted after its keyslot was added
    /// reuses that keyslot when repeated.
    public func bind(disk: String, existingKey: SecretBytes) async throws(VolumeError) -> VolumeStatus {
        let result = await serialized { () async -> Result<VolumeStatus, VolumeError> in
            do throws(VolumeError) {
                return .success(try await self.bindNow(disk: disk, existingKey: existingKey))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private func bindNow(disk: String, existingKey: SecretBytes) async throws(VolumeError) -> VolumeStatus {
        let volume = try volume(disk)
        let cryptsetup = try requireCryptsetup()
        let host = try requireHost()
        let key = try await key(disk, nil)
        let header = try await blocking { () throws(VolumeError) in try cryptsetup.metadata(volume.device) }
        if let bound = try header.bindings(rack: rack, disk: disk, latest: key.epoch).first {
            throw VolumeError(
                .bound, "'\(disk)' is bound already (epoch \(bound.token.epoch), keyslot \(bound.token.keyslot))")
        }
        let device = volume.device
        let secret = key.key
        let keyslot = try await blocking { () throws(VolumeError) -> Int in
            guard try cryptsetup.test(device, key: existingKey) != nil else {
                throw VolumeError(.key, "the existing key does not open \(device)")
            }
            if let enrolled = try cryptsetup.test(device, key: secret) { return enrolled }
            guard let free = header.freeKeyslot, header.freeToken != nil else {
                throw VolumeError(.unexpected, "the header of \(device) has no free keyslot or token")
            }
            try cryptsetup.addKey(device, existing: existingKey, new: secret, keyslot: free)
            return free
        }
        try await finishBinding(volume, key: key, keyslot: keyslot, cryptsetup, host)
        return board.all.first { $0.disk == disk }!
    }

    /// Writes a new LUKS2 header on the empty device of `disk` whose only key
    /// is the latest committed epoch's disk key, with its token, and opens or
    /// verifies it. A device that is not empty (a LUKS header, or any byte
    /// of its first MiB not zero) is refused and left untouched.
    public func format(disk: String) async throws(VolumeError) -> VolumeStatus {
        let result = await serialized { () async -> Result<VolumeStatus, VolumeError> in
            do throws(VolumeError) {
                return .success(try await self.formatNow(disk: disk))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private func formatNow(disk: String) async throws(VolumeError) -> VolumeStatus {
        let volume = try volume(disk)
        let cryptsetup = try requireCryptsetup()
        let host = try requireHost()
        let key = try await key(disk, nil)
        let device = volume.device
        let secret = key.key
        try await blocking { () throws(VolumeError) in
            try Self.requireEmpty(device)
            try cryptsetup.format(device, key: secret)
        }
        try await finishBinding(volume, key: key, keyslot: 0, cryptsetup, host)
        return board.all.first { $0.disk == disk }!
    }

    static func requireEmpty(_ device: String) throws(VolumeError) {
        guard let handle = FileHandle(forReadingAtPath: device) else {
            if !FileManager.default.fileExists(atPath: device) {
                throw VolumeError(.deviceMissing, "\(device) does not exist")
            }
            throw VolumeError(.notEmpty, "cannot read \(device)")
        }
        defer { try? handle.close() }
        let start = (try? handle.read(upToCount: 1 << 20)) ?? Data()
        if LuksHeaderCheck.check(Array(start)) != .notLuks {
            throw VolumeError(.notEmpty, "\(device) has a LUKS header already; luks-bind binds an existing volume")
        }
        guard start.allSatisfy({ $0 == 0 }) else {
            throw VolumeError(
                .notEmpty,
                "\(device) is not empty (its first MiB holds data); luks-format only formats an empty device")
        }
    }

    private func finishBinding(
        _ volume: LuksVolume, key: DiskKey, keyslot: Int, _ cryptsetup: Cryptsetup, _ host: any VolumeHost
    ) async throws(VolumeError) {
        let device = volume.device
        let secret = key.key
        let token = KeyrackToken(
            rackId: rack, diskId: volume.disk, epoch: key.epoch, keyslot: keyslot, scheme: key.scheme)
        try await blocking { () throws(VolumeError) in
            let header = try cryptsetup.metadata(device)
            guard let id = header.freeToken else {
                throw VolumeError(.unexpected, "the header of \(device) has no free token")
            }
            try cryptsetup.importToken(device, id: id, token: token)
            guard try cryptsetup.test(device, key: secret, keyslot: keyslot) == keyslot else {
                throw VolumeError(.key, "keyslot \(keyslot) of \(device) does not open with the enrolled key")
            }
        }
        try await host.recordVolume(disk: volume.disk, plan: nil, keyed: key.version)
        logger.notice(
            "volume bound", metadata: ["disk": "\(volume.disk)", "epoch": "\(key.epoch)", "keyslot": "\(keyslot)"])
        let header = try await blocking { () throws(VolumeError) in try cryptsetup.metadata(device) }
        _ = try await openWithNewest(
            volume, try header.bindings(rack: rack, disk: volume.disk, latest: key.epoch), cryptsetup)
    }
}

/// The threads cryptsetup runs on: a pool of their own, so that volumes
/// being opened or re-keyed never hold up the TLS handshakes' signatures
/// (``RootOfTrustThreads``) or anything else on NIO's shared pool.
enum CryptsetupThreads {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
}

/// Runs blocking `body` on the cryptsetup threads (never on Swift's cooperative pool).
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws(VolumeError) -> T) async throws(VolumeError) -> T {
    do {
        return try await CryptsetupThreads.pool.runIfActive { try body() }
    } catch let error as VolumeError {
        throw error
    } catch {
        throw VolumeError(.cryptsetupFailed, "cannot run cryptsetup: \(error)")
    }
}
