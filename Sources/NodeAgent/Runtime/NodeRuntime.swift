import Foundation
import Logging
import NIOCore
import NIOPosix
import SecretSharing
import Synchronization
import TrustQuorum
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// One running trust-quorum node: it feeds what arrives on its attested
/// channels and its admin socket into ``TrustQuorum/Node`` and carries out
/// what comes back — persisting the ledger **before** sending any message
/// that depends on it, sending, raising alarms, and unlocking (loading the
/// rack secret of the latest committed epoch) as soon as enough shares are in.
///
/// Channels: this node dials every known peer whose platform id sorts after
/// its own, with exponential backoff, and accepts the others; a peer must
/// chain to the manufacturing root, be in this node's address book or in a
/// configuration it knows, and pass attestation before the state machine
/// hears of it (`connected`).
public actor NodeRuntime {
    /// This node's platform id.
    public nonisolated let platformId: PlatformId
    let configuration: NodeConfiguration
    let identity: NodeTLSIdentity
    let attestation: ChannelAttestationHook
    let ledger: Ledger
    let logger: Logger
    let attestationEnforced: Bool
    let crashAfterPersist: Int?

    var node: Node
    private var generation: UInt64
    /// The state as last written to the ledger: what survives a crash, and
    /// what the node reports (a halted node's memory may hold more).
    private var durable: PersistentState
    private var ledgerProblems: [String]
    private var addressBook: [PlatformId: PeerAddress]
    private var connections: [PlatformId: Connection] = [:]
    private var nextConnectionId: UInt64 = 0
    private var dialers: [PlatformId: Task<Void, Never>] = [:]
    /// Learnt peer addresses, disks' keyed epochs and alarms, kept beside the ledger.
    var agentState: AgentState
    var unlockedEpoch: Epoch?
    private var loadFailure: LoadRackSecretError.Code?
    private var persists = 0
    var halted: String?
    private var stopping = false
    private var random = SystemRandomSource()
    private var listenPort: Int
    /// The LUKS2 volumes of the configuration: opened after each unlock, re-keyed after each commit.
    let volumes: VolumeManager

    private struct Connection {
        let id: UInt64
        let outbound: AsyncStream<ByteBuffer>.Continuation
        let channel: any Channel
    }

    /// Backoff between connection attempts to a peer: doubling from `initial` up to `maximum`, with jitter.
    static let initialBackoff = Duration.milliseconds(50)
    static let maximumBackoff = Duration.milliseconds(1000)

    /// A node from its configuration, opened identity and ledger. Reads the
    /// ledger (reporting unusable copies) and throws if no copy opens.
    public init(
        configuration: NodeConfiguration,
        rootOfTrust: any RootOfTrust,
        identity: NodeTLSIdentity,
        attestation: @escaping ChannelAttestationHook,
        attestationEnforced: Bool,
        logger: Logger,
        crashAfterPersist: Int? = nil,
        volumeOptions: VolumeOptions = VolumeOptions()
    ) throws(NodeRuntimeError) {
        self.platformId = configuration.platform
        self.configuration = configuration
        self.identity = identity
        self.attestation = attestation
        self.attestationEnforced = attestationEnforced
        self.logger = logger
        self.crashAfterPersist = crashAfterPersist
        do {
            ledger = try Ledger(
                directories: configuration.ledger.map { URL(fileURLWithPath: $0) }, rootOfTrust: rootOfTrust)
            let loaded = try ledger.load()
            generation = loaded.generation
            ledgerProblems = loaded.problems.map { "\($0.path): \($0.reason)" }
            node = Node(
                platformId: configuration.platform, rackId: configuration.rackId,
                persistentState: loaded.state ?? .empty)
            durable = node.persistentState
        } catch {
            throw NodeRuntimeError("the ledger cannot be opened: \(error.reason)")
        }
        let agent = AgentState.load(from: ledger.directories)
        agentState = agent.state
        // The configuration file wins for the peers it names; the operator's
        // later additions (rack add) come from the agent state.
        addressBook = configuration.peers
        for (id, text) in agent.state.peers {
            guard let peer = try? NodeConfiguration.platformId(id, field: "peers"), peer != configuration.platform,
                addressBook[peer] == nil,
                let address = try? PeerAddress(parsing: text, field: "peers")
            else { continue }
            addressBook[peer] = address
        }
        listenPort = configuration.listen.port
        for problem in ledgerProblems {
            logger.warning("a ledger copy is unusable; using the other", metadata: ["problem": "\(problem)"])
        }
        for problem in agent.problems {
            logger.warning("an agent state copy is unusable", metadata: ["problem": "\(problem)"])
        }
        ledgerProblems += agent.problems
        do {
            volumes = try VolumeManager(
                volumes: configuration.volumes, rack: configuration.rackId, plans: agent.state.rekeys,
                options: volumeOptions, logger: logger)
        } catch {
            throw NodeRuntimeError("\(error.reason) (the configuration binds LUKS2 volumes)")
        }
    }

    /// Runs the node: listens for peers and on the admin socket, dials
    /// peers, and serves until cancelled.
    public func run(onReady: @escaping @Sendable (_ port: Int) -> Void = { _ in }) async throws(NodeRuntimeError) {
        let listener: PeerListener
        do {
            listener = try await PeerTransport.listen(
                host: configuration.listen.host,
                port: configuration.listen.port,
                identity: identity
            )
        } catch {
            throw NodeRuntimeError(error.reason)
        }
        listenPort = listener.port
        let admin: AdminListener
        do {
            admin = try await AdminSocket.listen(path: configuration.admin) { [weak self] request in
                guard let self else {
                    return AdminResponse(error: AdminError(code: "NODE-STOPPING", reason: "stopping"))
                }
                if let answer = await self.handleVolumeRequest(request) { return answer }
                return await self.handle(request)
            }
        } catch {
            await listener.close()
            throw NodeRuntimeError(error.reason)
        }
        logger.info(
            "node started",
            metadata: [
                "platform": "\(platformId)", "listen": "\(configuration.listen.host):\(listenPort)",
                "admin": "\(configuration.admin)",
                "epoch": "\(node.persistentState.latestCommittedEpoch.map { "\($0)" } ?? "none")",
            ]
        )
        await volumes.attach(self)
        flush()
        startDialers()
        onReady(listenPort)
        // The accept loops run outside this task's cancellation: on stop the
        // sockets are closed and the loops drain what was already accepted
        // (every accepted channel must be closed through executeThenClose).
        let peers = Task { try? await listener.run { channel in await self.serve(channel, expected: nil) } }
        let requests = Task { try? await admin.run() }
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        stopping = true
        stopAll()
        await listener.close()
        await admin.close()
        await peers.value
        await requests.value
    }

    private func stopAll() {
        for dialer in dialers.values { dialer.cancel() }
        dialers = [:]
        for connection in connections.values {
            connection.outbound.finish()
            connection.channel.close(promise: nil)
        }
        connections = [:]
        try? FileManager.default.removeItem(atPath: configuration.admin)
    }

    // MARK: - Channels

    /// Whether `peer` may open a channel to this node.
    private func isKnown(_ peer: PlatformId) -> Bool {
        guard peer != platformId else { return false }
        if addressBook[peer] != nil { return true }
        return node.persistentState.configurations.values.contains { $0.members[peer] != nil }
    }

    private func startDialers() {
        for peer in addressBook.keys where peer > platformId && dialers[peer] == nil {
            dialers[peer] = Task { [weak self] in await self?.dial(peer) }
        }
    }

    private func address(of peer: PlatformId) -> PeerAddress? { addressBook[peer] }
    private func isConnected(_ peer: PlatformId) -> Bool { connections[peer] != nil }

    private nonisolated func dial(_ peer: PlatformId) async {
        var delay = Self.initialBackoff
        var failures = 0
        while !Task.isCancelled {
            guard let address = await address(of: peer) else { return }
            if await !isConnected(peer) {
                do {
                    let channel = try await PeerTransport.connect(
                        host: address.host, port: address.port, identity: identity)
                    if await serve(channel, expected: peer) {
                        // A channel that was up and then closed: the peer may be restarting; dial again at once.
                        delay = Self.initialBackoff
                        failures = 0
                        continue
                    }
                    // Refused (another platform, not in this rack, attestation failed): back off like
                    // any failure, so a refusing peer is not hammered with handshakes.
                    failures += 1
                } catch {
                    failures += 1
                    // The first failure and then every tenth, so a peer that is down does not flood the log.
                    if failures == 1 || failures % 10 == 0 {
                        logger.info(
                            "cannot reach peer; retrying with backoff",
                            metadata: [
                                "peer": "\(peer)", "address": "\(address)", "attempts": "\(failures)",
                                "reason": "\(error.reason)",
                            ]
                        )
                    }
                }
            }
            let jitter = Double.random(in: 0.8...1.2)
            try? await Task.sleep(for: delay * jitter)
            delay = min(delay * 2, Self.maximumBackoff)
        }
    }

    /// Runs one established channel: attestation, then protocol frames until
    /// it closes. Returns whether the peer was admitted (attested and attached).
    @discardableResult
    private nonisolated func serve(_ peerChannel: PeerChannel, expected: PlatformId?) async -> Bool {
        let peer = peerChannel.peer
        let channel = peerChannel.channel
        let admitted = Mutex(false)
        try? await channel.executeThenClose { inbound, outbound in
            if let expected, expected != peer {
                logger.warning(
                    "the peer at this address is another platform; closing",
                    metadata: ["expected": "\(expected)", "certificate": "\(peer)"]
                )
                return
            }
            guard await !self.stopping else { return }
            guard await self.isKnown(peer) else {
                logger.warning(
                    "refusing a channel from a platform that is not in this rack", metadata: ["peer": "\(peer)"])
                return
            }
            var iterator = inbound.makeAsyncIterator()
            do {
                try await attestation(peerChannel, &iterator, outbound)
            } catch {
                logger.warning(
                    "attestation failed; no share moves on this channel",
                    metadata: ["peer": "\(peer)", "reason": "\(error)"])
                return
            }
            let (frames, continuation) = AsyncStream<ByteBuffer>.makeStream()
            guard let id = await self.attach(peer, outbound: continuation, channel: channel.channel) else { return }
            admitted.withLock { $0 = true }
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await frame in frames {
                        do { try await outbound.write(frame) } catch { break }
                    }
                    channel.channel.close(promise: nil)
                }
                do {
                    while let frame = try await iterator.next() {
                        guard await self.received(frame, from: peer, connection: id) else { break }
                    }
                } catch {
                    logger.debug("channel error", metadata: ["peer": "\(peer)", "error": "\(error)"])
                }
                continuation.finish()
                await group.waitForAll()
            }
            await self.detach(peer, connection: id)
        }
        return admitted.withLock { $0 }
    }

    private func attach(_ peer: PlatformId, outbound: AsyncStream<ByteBuffer>.Continuation, channel: any Channel)
        -> UInt64?
    {
        guard halted == nil, !stopping else { return nil }
        if let old = connections[peer] {
            // The peer reconnected (it restarted, or the old channel is half dead): the newer channel wins.
            old.outbound.finish()
            old.channel.close(promise: nil)
            node.disconnected(peer)
        }
        nextConnectionId += 1
        connections[peer] = Connection(id: nextConnectionId, outbound: outbound, channel: channel)
        logger.info("peer connected and attested", metadata: ["peer": "\(peer)"])
        node.connected(peer)
        flush()
        return nextConnectionId
    }

    private func detach(_ peer: PlatformId, connection id: UInt64) {
        guard connections[peer]?.id == id else { return }
        connections[peer] = nil
        node.disconnected(peer)
        logger.info("peer disconnected", metadata: ["peer": "\(peer)"])
        flush()
    }

    /// A frame from `peer`; false closes the channel (the peer sent something malformed).
    private func received(_ frame: ByteBuffer, from peer: PlatformId, connection id: UInt64) -> Bool {
        guard halted == nil, connections[peer]?.id == id else { return false }
        let message: Message
        do {
            message = try WireFormat.decodePayload(frame.readableBytesView)
        } catch {
            logger.warning(
                "a peer sent a malformed message; closing its channel",
                metadata: ["peer": "\(peer)", "error": "\(error.code.rawValue)"])
            return false
        }
        logger.debug("received", metadata: ["peer": "\(peer)", "message": "\(message)"])
        node.received(from: peer, message: message)
        flush()
        return true
    }

    // MARK: - Carrying out the node's output

    /// Unlocks if possible, then persists (if asked) before sending.
    private func flush() {
        guard halted == nil else { return }
        pollUnlock()
        let output = node.drainOutput()
        if output.persistentStateChanged {
            do {
                try ledger.write(node.persistentState, generation: generation + 1)
                generation += 1
                durable = node.persistentState
            } catch {
                // Nothing may be sent that depends on state that is not on disk: stop taking part.
                halt("the ledger cannot be written (\(error.reason)); this node stops taking part until restarted")
                return
            }
            persists += 1
            if let crashAfterPersist, persists == crashAfterPersist {
                logger.critical("test hook: crashing right after ledger write \(persists), before sending")
                kill(getpid(), SIGKILL)
            }
        }
        if !output.alarms.isEmpty {
            for alarm in output.alarms {
                agentState.alarms.append(alarm.description)
                logger.error("ALARM \(alarm.name)", metadata: ["alarm": "\(alarm)"])
            }
            agentState.alarms = Array(agentState.alarms.suffix(AgentState.maximumAlarms))
            saveAgentState()
        }
        for warning in output.warnings {
            logger.warning("\(warning)")
        }
        for outgoing in output.messages {
            guard let connection = connections[outgoing.to] else { continue }  // resent when it connects
            do {
                connection.outbound.yield(ByteBuffer(bytes: try WireFormat.encodePayload(outgoing.message)))
                logger.debug("sent", metadata: ["peer": "\(outgoing.to)", "message": "\(outgoing.message)"])
            } catch {
                logger.error(
                    "cannot encode a message", metadata: ["message": "\(outgoing.message)", "error": "\(error)"])
            }
        }
    }

    private func halt(_ reason: String) {
        halted = reason
        logger.critical("\(reason)")
        agentState.alarms.append("NodeHalted: \(reason)")
        saveAgentState()
        for connection in connections.values {
            connection.outbound.finish()
            connection.channel.close(promise: nil)
        }
        connections = [:]
        for dialer in dialers.values { dialer.cancel() }
        dialers = [:]
    }

    /// Loads the latest committed epoch's rack secret if it is not loaded yet.
    private func pollUnlock() {
        guard let latest = node.persistentState.latestCommittedEpoch, unlockedEpoch != latest else { return }
        do {
            guard try node.loadRackSecret(latest) != nil else { return }
            unlockedEpoch = latest
            loadFailure = nil
            logger.notice("unlocked: rack secret loaded", metadata: ["epoch": "\(latest)"])
            // A disk first opened now is keyed under this epoch.
            let unrecorded = configuration.disks.filter { agentState.disks[$0] == nil }
            if !unrecorded.isEmpty {
                for disk in unrecorded { agentState.disks[disk] = latest }
                saveAgentState()
            }
            volumes.unlocked(at: latest)
            for rekey in rekeys() {
                logger.notice(
                    "disk needs re-keying",
                    metadata: ["disk": "\(rekey.disk)", "from": "\(rekey.from)", "to": "\(rekey.to)"]
                )
            }
        } catch {
            if loadFailure != error.code {
                loadFailure = error.code
                logger.error("cannot load the rack secret", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Disks keyed under an older epoch than the latest committed, each from
    /// the epoch it is keyed under (acknowledged with `diskRekeyed`).
    private func rekeys() -> [DiskRekey] {
        guard let latest = node.persistentState.latestCommittedEpoch else { return [] }
        return configuration.disks.compactMap { disk in
            guard let keyed = agentState.disks[disk], keyed < latest else { return nil }
            return DiskRekey(disk: disk, from: keyed, to: latest)
        }
    }

    /// Writes the agent state; a failure is logged and reported, never fatal
    /// (it holds no share), but the operator must know.
    @discardableResult
    func saveAgentState() -> AdminError? {
        do {
            try agentState.save(to: ledger.directories)
            return nil
        } catch {
            logger.error("cannot write the agent state", metadata: ["reason": "\(error.reason)"])
            return AdminError(code: "NODE-STATE-WRITE", reason: "cannot write the agent state: \(error.reason)")
        }
    }

    // MARK: - Admin API

    func handle(_ request: AdminRequest) -> AdminResponse {
        if let halted, request.operation != .status {
            return AdminResponse(error: AdminError(code: "NODE-HALTED", reason: halted))
        }
        switch request.operation {
        case .status:
            return AdminResponse(status: status())
        case .reconfigure:
            guard let reconfigure = request.reconfigure else { return missing("reconfigure") }
            do {
                try node.reconfigure(reconfigure, using: &random)
            } catch {
                return AdminResponse(error: AdminError(code: error.code.rawValue, reason: error.reason))
            }
            logger.notice(
                "coordinating a reconfiguration",
                metadata: [
                    "epoch": "\(reconfigure.epoch)", "members": "\(reconfigure.members.count)",
                    "threshold": "\(reconfigure.threshold)",
                ]
            )
            return flushed()
        case .commit:
            guard let epoch = request.epoch else { return missing("epoch") }
            return committing { () throws(CommitError) in try node.commit(epoch) }
        case .prepareAndCommit:
            guard let configuration = request.configuration else { return missing("configuration") }
            return committing { () throws(CommitError) in try node.prepareAndCommit(configuration) }
        case .setPeers:
            guard let peers = request.peers else { return missing("peers") }
            var learnt: [PlatformId: PeerAddress] = [:]
            do {
                for (id, address) in peers {
                    let platform = try NodeConfiguration.platformId(id, field: "peers")
                    guard platform != platformId else { continue }
                    learnt[platform] = try PeerAddress(parsing: address, field: "peers.\(id)")
                }
            } catch {
                return AdminResponse(error: AdminError(code: "NODE-ADMIN-REQUEST", reason: error.reason))
            }
            // The configuration file wins for the peers it names (as at start).
            // Compared with what is on disk, so that a request repeated after a failed write writes again.
            let added = learnt.filter {
                configuration.peers[$0.key] == nil && agentState.peers[$0.key.description] != $0.value.description
            }
            guard !added.isEmpty else { return AdminResponse() }
            let before = agentState.peers
            for (platform, address) in added {
                addressBook[platform] = address
                agentState.peers[platform.description] = address.description
            }
            startDialers()
            let failure = saveAgentState()
            if failure != nil { agentState.peers = before }  // dial them now; record them when a write succeeds
            return AdminResponse(error: failure)
        case .diskRekeyed:
            guard let disk = request.disk else { return missing("disk") }
            guard let epoch = request.epoch else { return missing("epoch") }
            return diskRekeyed(disk: disk, epoch: epoch)
        case .diskKey:
            guard let disk = request.disk else { return missing("disk") }
            return diskKey(disk: disk, epoch: request.epoch)
        case .luksBind, .luksFormat:
            // Answered by handleVolumeRequest before this.
            return AdminResponse(
                error: AdminError(code: "NODE-ADMIN-REQUEST", reason: "not a request for this handler"))
        }
    }

    private func missing(_ field: String) -> AdminResponse {
        AdminResponse(error: AdminError(code: "NODE-ADMIN-REQUEST", reason: "the request lacks '\(field)'"))
    }

    private func committing(_ body: () throws(CommitError) -> Void) -> AdminResponse {
        let before = node.persistentState.latestCommittedEpoch
        do {
            try body()
        } catch {
            flush()
            return AdminResponse(error: AdminError(code: error.code.rawValue, reason: error.description))
        }
        if node.persistentState.latestCommittedEpoch != before {
            logger.notice(
                "committed", metadata: ["epoch": "\(node.persistentState.latestCommittedEpoch.map { "\($0)" } ?? "-")"])
        }
        return flushed()
    }

    /// Carries out the node's output and answers: success only if the state
    /// it depends on reached the ledger (a node that could not persist has
    /// halted, and the operator must not count it).
    private func flushed() -> AdminResponse {
        flush()
        if let halted { return AdminResponse(error: AdminError(code: "NODE-HALTED", reason: halted)) }
        return AdminResponse()
    }

    /// The operator re-keyed `disk` to `epoch`: record it, so that re-keying
    /// is reported from there on.
    private func diskRekeyed(disk: String, epoch: Epoch) -> AdminResponse {
        guard configuration.disks.contains(disk) else {
            return AdminResponse(
                error: AdminError(code: "NODE-DISK-UNKNOWN", reason: "'\(disk)' is not one of this node's disks"))
        }
        guard node.persistentState.committedEpochs.contains(epoch) else {
            return AdminResponse(
                error: AdminError(code: "NODE-ADMIN-REQUEST", reason: "epoch \(epoch) is not committed on this node"))
        }
        if let keyed = agentState.disks[disk], epoch < keyed {
            return AdminResponse(
                error: AdminError(
                    code: "NODE-ADMIN-REQUEST",
                    reason: "'\(disk)' is already keyed under epoch \(keyed); it cannot go back to \(epoch)"))
        }
        guard agentState.disks[disk] != epoch else { return AdminResponse() }
        let before = agentState.disks[disk]
        agentState.disks[disk] = epoch
        if let failure = saveAgentState() {
            agentState.disks[disk] = before  // not recorded: keep reporting the re-key
            return AdminResponse(error: failure)
        }
        logger.notice("disk re-keyed", metadata: ["disk": "\(disk)", "epoch": "\(epoch)"])
        return AdminResponse()
    }

    private func diskKey(disk: String, epoch: Epoch?) -> AdminResponse {
        guard configuration.disks.contains(disk) else {
            return AdminResponse(
                error: AdminError(code: "NODE-DISK-UNKNOWN", reason: "'\(disk)' is not one of this node's disks"))
        }
        if let expunged = node.persistentState.expunged {
            return AdminResponse(
                error: AdminError(
                    code: "NODE-EXPUNGED", reason: "this node was removed from the rack at epoch \(expunged.epoch)"))
        }
        guard let latest = node.persistentState.latestCommittedEpoch else {
            return AdminResponse(
                error: AdminError(code: "NODE-NOT-COMMITTED", reason: "this node has committed no configuration"))
        }
        let wanted = epoch ?? latest
        guard unlockedEpoch == latest else {
            return AdminResponse(
                error: AdminError(code: "NODE-LOCKED", reason: "the rack secret is not loaded yet (waiting for shares)")
            )
        }
        do {
            guard let secret = try node.loadRackSecret(wanted) else {
                return AdminResponse(
                    error: AdminError(code: "NODE-LOCKED", reason: "the rack secret is not loaded yet"))
            }
            let key = DiskKey(secret: secret, epoch: wanted, rackId: configuration.rackId, diskId: Array(disk.utf8))
            return AdminResponse(key: key.key.withUnsafeBytes { $0.hexString }, keyEpoch: wanted)
        } catch {
            return AdminResponse(error: AdminError(code: error.code.rawValue, reason: error.description))
        }
    }

    /// What this node reports about itself.
    func status() -> NodeStatus {
        let state = durable
        return NodeStatus(
            platform: platformId,
            rackId: configuration.rackId,
            listen: PeerAddress(host: configuration.listen.host, port: listenPort).description,
            latestCommitted: state.latestCommittedConfiguration,
            highestEpochSeen: [node.highestEpochSeen, state.latestKnownEpoch, node.coordinatorStatus?.epoch]
                .compactMap { $0 }.max(),
            unlockedEpoch: unlockedEpoch,
            computingShareEpoch: node.computingShareEpoch,
            coordinating: node.coordinatorStatus.map {
                CoordinatorReport(epoch: $0.epoch, configuration: $0.configuration, acked: $0.acked.sorted())
            },
            expunged: state.expunged,
            alarms: agentState.alarms,
            connected: connections.keys.sorted(),
            rekey: rekeys(),
            volumes: volumes.statuses,
            ledgerProblems: ledgerProblems,
            attestationEnforced: attestationEnforced
        )
    }
}

/// Runs attestation on a channel that was just established, before any
/// protocol frame; throws to refuse the peer.
public typealias ChannelAttestationHook =
    @Sendable (
        PeerChannel,
        inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws(PeerChannelError) -> Void

/// A node that cannot start or run.
public struct NodeRuntimeError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
