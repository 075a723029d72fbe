import Foundation
import KeyrackCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TrustQuorum

#if canImport(Glibc)
    import Glibc
#endif

/// One running trust-quorum node: a thin ``Service`` around ``AgentCore``.
/// It turns what arrives on the attested channels and the admin socket into
/// the core's events, and carries out the actions that come back, in order
/// (writing the ledger and the agent state, sending, closing, dialing,
/// answering, logging). Every rule is the core's; see ``AgentCore``.
///
/// Where code runs (`docs/ARCHITECTURE.md`): this actor owns the core;
/// the accept, admin and timer loops are child tasks of ``run()``, and each
/// dial attempt is a task the actor keeps (cancelled on shutdown); channel I/O is
/// NIO's; ledger writes run on the actor, which is what keeps them in order
/// with the sends that depend on them.
public actor NodeRuntime: Service {
    /// This node's platform id.
    public nonisolated let platformId: PlatformId
    let configuration: NodeConfiguration
    let identity: NodeTLSIdentity
    /// What the TLS layer admits: kept equal to the core's admission after every event.
    let admission: PeerAdmission
    let attestation: ChannelAttestationHook
    let ledger: Ledger
    let logger: Logger
    let crashAfterPersist: Int?
    let clock: any Clock<Duration>
    /// Time since the node started, on `clock`: the `now` of the core's events.
    let elapsed: @Sendable () -> Duration
    /// Wakes the timer when the core has a dial attempt waiting.
    private nonisolated let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    let onReady: @Sendable (_ port: Int) -> Void
    /// The LUKS2 volumes of the configuration: opened after each unlock, re-keyed after each commit.
    let volumes: VolumeManager
    /// Judges the client certificates of the network admin listener (`adminListen`).
    let networkOperators: OperatorCertificateVerifier?
    /// The measurement policy peers are appraised against, when the node's
    /// attestor reads it from a store (operator updates, SIGHUP reloads).
    let policies: NodePolicyStore?
    /// What the node counts, served on `metricsListen` and reported in its status.
    public nonisolated let metrics = NodeMetrics()

    private var core: AgentCore<SystemRandomSource>
    private var channels: [AgentCore<SystemRandomSource>.ConnectionID: Channel] = [:]
    private var nextConnection: UInt64 = 0
    private var nextRequest: UInt64 = 0
    private var replies: [UInt64: AdminResponse] = [:]
    private var dialers: [PlatformId: Task<Void, Never>] = [:]
    private var persists = 0

    private struct Channel {
        let outbound: AsyncStream<ByteBuffer>.Continuation
        let channel: any NIOCore.Channel
    }

    /// A node from its configuration, opened identity and ledger. Reads the
    /// ledger and the agent state (reporting unusable copies) and throws if
    /// no ledger copy opens, or if the ledger is older than the root of
    /// trust's marker or gone after the node was initialised (unless
    /// `reinitialise`: then it starts as a new node; see ``Ledger/load(reinitialise:)``).
    public init(
        configuration: NodeConfiguration,
        rootOfTrust: any RootOfTrust,
        identity: NodeTLSIdentity,
        attestation: @escaping ChannelAttestationHook,
        attestationEnforced: Bool,
        operatorVerifier: any DecisionVerifier,
        logger: Logger,
        crashAfterPersist: Int? = nil,
        clock: any Clock<Duration> = ContinuousClock(),
        volumeOptions: VolumeOptions = VolumeOptions(),
        reinitialise: Bool = false,
        networkOperators: OperatorCertificateVerifier? = nil,
        policies: NodePolicyStore? = nil,
        onReady: @escaping @Sendable (_ port: Int) -> Void = { _ in }
    ) throws(NodeRuntimeError) {
        self.platformId = configuration.platform
        self.networkOperators = networkOperators
        self.policies = policies
        self.configuration = configuration
        var identity = identity
        let admission = identity.admission ?? PeerAdmission(denied: configuration.deniedSerials)
        identity.admission = admission
        self.admission = admission
        self.identity = identity
        self.attestation = attestation
        self.logger = logger
        self.crashAfterPersist = crashAfterPersist
        self.clock = clock
        self.elapsed = Self.stopwatch(clock)
        (wakeups, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.onReady = onReady
        let loaded: Ledger.Loaded
        do {
            ledger = try Ledger(
                directories: configuration.ledger.map { URL(fileURLWithPath: $0) }, rootOfTrust: rootOfTrust)
            loaded = try ledger.load(reinitialise: reinitialise)
        } catch {
            throw NodeRuntimeError(.ledger, "the ledger cannot be opened (\(error.code)): \(error.reason)")
        }
        let agent = AgentState.load(from: ledger.directories, rootOfTrust: rootOfTrust)
        let problems = loaded.problems.map { "\($0.path): \($0.reason)" }
        for problem in problems {
            logger.warning("a ledger copy is unusable; using the other", metadata: ["problem": "\(problem)"])
        }
        for problem in agent.problems {
            logger.warning("an agent state copy is unusable", metadata: ["problem": "\(problem)"])
        }
        core = AgentCore(
            settings: AgentCore.Settings(
                platform: configuration.platform, rackId: configuration.rackId, disks: configuration.disks,
                configuredPeers: configuration.peers, listen: configuration.listen,
                attestationEnforced: attestationEnforced),
            state: loaded.state ?? .empty, generation: loaded.generation, agentState: agent.state,
            startupProblems: problems + agent.problems, operatorVerifier: operatorVerifier,
            random: SystemRandomSource())
        admission.update(core.admission)
        do {
            volumes = try VolumeManager(
                volumes: configuration.volumes, rack: configuration.rackId, plans: agent.state.rekeys,
                options: volumeOptions, logger: logger)
        } catch {
            throw NodeRuntimeError(.volumes, "\(error.reason) (the configuration binds LUKS2 volumes)")
        }
    }

    /// Runs the node until graceful shutdown (SIGTERM in a `ServiceGroup`)
    /// or cancellation: listens for peers and on the admin socket, dials peers.
    public func run() async throws {
        let listener: PeerListener
        do {
            listener = try await PeerTransport.listen(
                host: configuration.listen.host, port: configuration.listen.port, identity: identity)
        } catch {
            throw NodeRuntimeError(.listen, error.reason)
        }
        let admin: AdminListener
        do {
            admin = try await AdminSocket.listen(path: configuration.admin) { [weak self] request, caller in
                guard let self else { return AdminResponse(error: AdminError(.stopping, "stopping")) }
                return await self.answer(request, caller: caller)
            }
        } catch {
            await listener.close()
            throw NodeRuntimeError(.listen, error.reason)
        }
        var networkAdmin: AdminListener?
        if let address = configuration.adminListen {
            do throws(AdminError) {
                guard let networkOperators else {
                    throw AdminError(.authentication, "no operator CA to judge the admin listener's clients")
                }
                networkAdmin = try await AdminNetwork.listen(
                    on: address, identity: identity, operators: networkOperators
                ) { [weak self] request, caller in
                    guard let self else { return AdminResponse(error: AdminError(.stopping, "stopping")) }
                    return await self.answer(request, caller: caller)
                }
            } catch {
                await listener.close()
                await admin.close()
                throw NodeRuntimeError(.listen, error.reason)
            }
        }
        var metricsListener: MetricsListener?
        if let address = configuration.metricsListen {
            do {
                metricsListener = try await MetricsListener.listen(on: address) { [weak self] in
                    await self?.metricsText() ?? ""
                }
            } catch {
                await listener.close()
                await admin.close()
                await networkAdmin?.close()
                throw NodeRuntimeError(.listen, "cannot serve metrics on \(address): \(error)")
            }
        }
        logger.info(
            "node started",
            metadata: [
                "platform": "\(platformId)", "listen": "\(configuration.listen.host):\(listener.port)",
                "admin": "\(configuration.admin)",
                "adminListen":
                    "\(configuration.adminListen.map { "\($0.host):\(networkAdmin?.port ?? $0.port)" } ?? "none")",
                "epoch": "\(core.durable.latestCommittedEpoch.map { "\($0)" } ?? "none")",
            ])
        await volumes.attach(self)
        perform(.started(listenPort: listener.port))
        onReady(listener.port)
        await withTaskGroup(of: Void.self) { group in
            // The accept loops drain what was already accepted after their sockets close
            // (every accepted channel must be closed through executeThenClose).
            let metrics = metrics
            group.addTask {
                try? await listener.run(
                    { channel in await self.serve(channel, expected: nil) },
                    handshakeFailed: { error in metrics.handshakeFailed(error.code.rawValue) })
            }
            if let metricsListener { group.addTask { try? await metricsListener.run() } }
            group.addTask { try? await admin.run() }
            if let networkAdmin { group.addTask { try? await networkAdmin.run() } }
            group.addTask { await self.runTimer() }
            try? await gracefulShutdown()
            perform(.stopping)
            wake.finish()
            try? FileManager.default.removeItem(atPath: configuration.admin)
            await listener.close()
            await admin.close()
            await networkAdmin?.close()
            await metricsListener?.close()
            await group.waitForAll()
        }
    }

    // MARK: - Carrying out the core's actions

    /// Hands `event` to the core and carries out what it asks, feeding each
    /// write's outcome back before anything else.
    private func perform(_ event: AgentCore<SystemRandomSource>.Event) {
        let unlockedBefore = core.unlockedEpoch
        defer {
            // At boot and after every commit: open or verify the bound volumes and re-key them.
            if let unlocked = core.unlockedEpoch, unlocked != unlockedBefore { volumes.unlocked(at: unlocked) }
        }
        var queue = core.handle(event)[...]
        while let action = queue.popFirst() {
            switch action {
            case .writeLedger(let state, let generation):
                let started = ContinuousClock.now
                do {
                    try ledger.write(state, generation: generation)
                    metrics.ledgerWritten(started.duration(to: .now), failed: false)
                    queue += core.handle(.ledgerWritten(generation: generation))
                    crashHook()
                } catch {
                    metrics.ledgerWritten(started.duration(to: .now), failed: true)
                    queue += core.handle(.ledgerWriteFailed(generation: generation, reason: error.reason))
                }
            case .saveAgentState(let state):
                do {
                    try state.save(to: ledger.directories, rootOfTrust: ledger.rootOfTrust)
                    queue += core.handle(.agentStateSaved(generation: state.generation))
                } catch {
                    queue += core.handle(.agentStateSaveFailed(generation: state.generation, reason: error.reason))
                }
            case .send(let message, let peer, let id):
                do {
                    channels[id]?.outbound.yield(ByteBuffer(bytes: try WireFormat.encodePayload(message)))
                } catch {
                    logger.error("cannot encode a message", metadata: ["peer": "\(peer)", "error": "\(error)"])
                }
            case .close(let id):
                channels.removeValue(forKey: id).map {
                    $0.outbound.finish()
                    $0.channel.close(promise: nil)
                }
            case .connect(let peer, let address):
                dialers[peer] = Task { [weak self] in await self?.attempt(peer, at: address) }
            case .stopDialing:
                for dialer in dialers.values { dialer.cancel() }
                dialers = [:]
            case .reply(let request, let response):
                replies[request] = response
            case .log(let line):
                logger.log(level: line.level, "\(line.message)", metadata: line.metadata.mapValues { .string($0) })
            }
        }
        admission.update(core.admission)
        if core.nextTick != nil { wake.yield() }
    }

    /// Reads the denied device serials from the configuration file at
    /// `file` again (SIGHUP). Every channel is closed and re-established, so
    /// a peer whose certificate is now denied fails its next handshake.
    public func reloadDeniedSerials(from file: String) {
        do {
            let reloaded = try NodeConfiguration(contentsOf: file)
            guard reloaded.deniedSerials != admission.denied else {
                logger.notice("SIGHUP: the denied device certificates are unchanged")
                return
            }
            admission.deny(reloaded.deniedSerials)
            for channel in channels.values { channel.channel.close(promise: nil) }
            logger.notice(
                "reloaded the denied device certificates", metadata: ["count": "\(reloaded.deniedSerials.count)"])
        } catch {
            logger.error(
                "cannot reload the node configuration; the denied certificates are unchanged",
                metadata: ["reason": "\(error.reason)"])
        }
    }

    private func crashHook() {
        #if DEBUG
            persists += 1
            if let crashAfterPersist, persists == crashAfterPersist {
                logger.critical("test hook: crashing right after ledger write \(persists), before sending")
                kill(getpid(), SIGKILL)
            }
        #endif
    }

    private func answer(_ request: AdminRequest, caller: AdminCaller) async -> AdminResponse {
        if case .networkOperator(let name, let from) = caller {
            // Every request over the network is on the record: who, from where, what.
            logger.notice(
                "admin request over the network",
                metadata: ["operator": "\(name)", "from": "\(from)", "operation": "\(request.operation.rawValue)"])
            if request.operation == .diskKey, !configuration.allowNetworkDiskKey {
                return AdminResponse(
                    error: AdminError(
                        .forbidden,
                        "this node does not hand out disk keys over the network (allowNetworkDiskKey is not set in its configuration)"
                    ))
            }
        }
        let command: AdminCommand
        do {
            command = try AdminCommand(request, localPlatform: platformId)
        } catch {
            return AdminResponse(error: error)
        }
        if case .setPolicy(let signed, let dryRun) = command { return setPolicy(signed, dryRun: dryRun) }
        if let answer = await handleVolumeCommand(command) { return answer }
        nextRequest += 1
        let id = nextRequest
        perform(.admin(command, request: id))
        var response = replies.removeValue(forKey: id) ?? AdminResponse(error: AdminError(.halted, "no answer"))
        // The volumes' statuses are the volume manager's, the counters the metrics'; the core reports the rest.
        if response.status != nil {
            response.status?.volumes = volumes.statuses
            response.status?.counters = metrics.counters
            if let policies {
                response.status?.policy = policies.state
                response.status?.attestationEnforced = policies.policy.mode == .enforce
            }
        }
        return response
    }

    /// Checks an operator-signed measurement policy and, unless `dryRun`,
    /// persists it and puts it in force. Every channel is then closed and
    /// re-established, so each peer is appraised against the new policy in
    /// its next handshake (and this node by theirs).
    private func setPolicy(_ signed: SignedNodePolicy, dryRun: Bool) -> AdminResponse {
        guard let policies else {
            return AdminResponse(error: AdminError(.request, "this node has no measurement policy store"))
        }
        let before = policies.state
        do throws(AdminError) {
            let after = try policies.apply(signed, dryRun: dryRun)
            if !dryRun, after != before {
                logger.notice(
                    "the operator put a new measurement policy in force; re-attesting every peer",
                    metadata: ["policy": "\(after)", "before": "\(before)"])
                for channel in channels.values { channel.channel.close(promise: nil) }
            }
            return AdminResponse(policy: after)
        } catch {
            logger.warning(
                "refused an operator-signed measurement policy",
                metadata: ["version": "\(signed.version)", "reason": "\(error.reason)", "dryRun": "\(dryRun)"])
            return AdminResponse(error: error)
        }
    }

    /// Reads the configuration's policy file again (SIGHUP) and, if it
    /// changed, puts it in force and re-attests every peer. An
    /// operator-signed policy in force is kept: the file is not read then.
    public func reloadPolicyFile() {
        guard let policies else { return }
        let before = policies.state
        do throws(NodeAttestationPolicyError) {
            guard let after = try policies.reloadFile() else {
                logger.notice(
                    "SIGHUP: an operator-signed measurement policy is in force; the policy file is not read",
                    metadata: ["policy": "\(before)"])
                return
            }
            guard after != before else {
                logger.notice("SIGHUP: the measurement policy file is unchanged")
                return
            }
            for channel in channels.values { channel.channel.close(promise: nil) }
            logger.notice(
                "reloaded the measurement policy file; re-attesting every peer", metadata: ["policy": "\(after)"])
        } catch {
            logger.error(
                "cannot reload the measurement policy file; the policy in force is unchanged",
                metadata: ["code": "\(error.code)", "reason": "\(error.reason)"])
        }
    }

    /// The metrics exposition, with the status as it is now.
    private func metricsText() -> String { metrics.render(status()) }

    // MARK: - Channels

    private func admits(_ peer: PlatformId) -> Bool { core.admits(peer) }
    private var nextTick: Duration? { core.nextTick }

    /// Sends the core `tick(now:)` when a dial attempt is due. It sleeps
    /// toward the earliest due attempt in slices of at most
    /// ``timerSlice``, reading it again after each, so an attempt scheduled
    /// while it sleeps is not late; with nothing due it waits to be woken.
    private nonisolated func runTimer() async {
        var wakes = wakeups.makeAsyncIterator()
        while !Task.isCancelled {
            guard let due = await nextTick else {
                if await wakes.next() == nil { return }
                continue
            }
            let wait = due - elapsed()
            if wait > .zero {
                try? await clock.sleep(for: min(wait, Self.timerSlice))
            } else {
                await perform(.tick(now: elapsed()))
            }
        }
    }

    /// The longest the timer sleeps before it looks at the core again.
    static let timerSlice = Duration.milliseconds(20)

    /// Time since now on `clock`, as a function.
    private static func stopwatch<C: Clock>(_ clock: C) -> @Sendable () -> Duration where C.Duration == Duration {
        let start = clock.now
        return { start.duration(to: clock.now) }
    }

    /// One attempt to reach `peer` (the core's ``AgentCore/Action/connect(_:at:)``):
    /// connect, serve the channel until it closes, and tell the core how it ended.
    private nonisolated func attempt(_ peer: PlatformId, at address: PeerAddress) async {
        let outcome: AgentCore<SystemRandomSource>.DialOutcome
        do {
            let channel = try await PeerTransport.connect(host: address.host, port: address.port, identity: identity)
            outcome = await serve(channel, expected: peer) ? .closed : .refused
        } catch {
            if error.code == .connect {
                metrics.dialFailed()
            } else {
                metrics.handshakeFailed(error.code.rawValue)
            }
            outcome = .unreachable(reason: error.reason)
        }
        guard !Task.isCancelled else { return }
        await perform(.dialEnded(peer, outcome, now: elapsed()))
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
                    metadata: ["expected": "\(expected)", "certificate": "\(peer)"])
                return
            }
            guard await self.admits(peer) else {
                logger.warning(
                    "refusing a channel from a platform that is not in this rack", metadata: ["peer": "\(peer)"])
                return
            }
            var iterator = inbound.makeAsyncIterator()
            do {
                try await attestation(peerChannel, &iterator, outbound)
            } catch {
                metrics.attestationFailed((error as? PeerChannelError)?.code.rawValue ?? "other")
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

    private func attach(
        _ peer: PlatformId, outbound: AsyncStream<ByteBuffer>.Continuation, channel: any NIOCore.Channel
    )
        -> UInt64?
    {
        nextConnection += 1
        let id = nextConnection
        channels[id] = Channel(outbound: outbound, channel: channel)
        perform(.peerAttached(peer, connection: id))
        return core.isAttached(peer, connection: id) ? id : nil
    }

    private func detach(_ peer: PlatformId, connection id: UInt64) {
        channels[id] = nil
        perform(.peerDetached(peer, connection: id))
    }

    /// A frame from `peer`; false once the channel is no longer this peer's.
    private func received(_ frame: ByteBuffer, from peer: PlatformId, connection id: UInt64) -> Bool {
        do {
            let message = try WireFormat.decodePayload(frame.readableBytesView)
            perform(.received(message, from: peer, connection: id))
        } catch {
            perform(.malformedFrame(from: peer, connection: id, code: error.code.rawValue))
        }
        return core.isAttached(peer, connection: id)
    }

    /// What this node reports about itself.
    func status() -> NodeStatus {
        var status = core.status(volumes: volumes.statuses)
        if let policies {
            status.policy = policies.state
            status.attestationEnforced = policies.policy.mode == .enforce
        }
        return status
    }

    // MARK: - LUKS2 volumes (VolumeHost)

    /// The key of a bound volume, from the core.
    public func volumeKey(disk: String, key: DiskKeyVersion?) async throws(VolumeError) -> DiskKey {
        try core.volumeKey(disk: disk, key: key)
    }

    /// Writes a volume's re-key progress before the step it precedes.
    public func recordVolume(disk: String, plan: RekeyPlan?, keyed: DiskKeyVersion?) async throws(VolumeError) {
        let before = core.agentState
        guard let state = core.recordVolume(disk: disk, plan: plan, keyed: keyed) else { return }
        do {
            try state.save(to: ledger.directories, rootOfTrust: ledger.rootOfTrust)
        } catch {
            core.restoreAgentState(before)
            logger.error("cannot write the agent state", metadata: ["reason": "\(error.reason)"])
            throw VolumeError(.stateWrite, "cannot write the agent state: \(error.reason)")
        }
    }

    /// Whether the node has halted (volume requests are refused then).
    var halted: String? { core.halted }
}

/// Runs attestation on a channel that was just established, before any
/// protocol frame; throws to refuse the peer.
public typealias ChannelAttestationHook =
    @Sendable (
        PeerChannel,
        inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator,
        NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws(PeerChannelError) -> Void

/// Why a node cannot start or run.
public typealias NodeRuntimeError = CodedError<NodeRuntimeErrorCode>

/// The codes of ``NodeRuntimeError``.
public struct NodeRuntimeErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// No ledger copy opens.
    public static let ledger = NodeRuntimeErrorCode("NODE-RUN-LEDGER")

    /// The peer listener or the admin socket cannot be set up.
    public static let listen = NodeRuntimeErrorCode("NODE-RUN-LISTEN")

    /// The device key, its certificate or the CA certificates are unusable.
    public static let identity = NodeRuntimeErrorCode("NODE-RUN-IDENTITY")

    /// The attestation policy cannot be read.
    public static let policy = NodeRuntimeErrorCode("NODE-RUN-POLICY")

    /// This node's own evidence cannot be produced.
    public static let evidence = NodeRuntimeErrorCode("NODE-RUN-EVIDENCE")

    /// The configuration binds LUKS2 volumes and they cannot be managed (no `cryptsetup`).
    public static let volumes = NodeRuntimeErrorCode("NODE-RUN-VOLUMES")
}
