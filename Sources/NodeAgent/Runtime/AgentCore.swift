import KeyrackCore
import Logging
import TrustQuorum

/// Everything one running node decides, as a value: the trust-quorum
/// ``TrustQuorum/Node``, the durable state and its generation, the agent
/// state (learnt peers, disks' keyed epochs, alarms), the unlocked epoch and
/// the halted flag. ``NodeRuntime`` feeds it events and carries out the
/// actions it returns, in order; nothing here does I/O, so every rule an
/// operator depends on is tested with values.
///
/// Rules kept here:
/// - **Persist before send.** When the node's state changed, the ledger write
///   is the first action; the messages, alarms and reply that depend on it
///   are released by ``Event/ledgerWritten(generation:)``. A failed write
///   halts the node: nothing that depended on it is sent, every channel is
///   closed, and every admin request but `status` answers `NODE-HALTED`.
/// - **One write at a time.** While a ledger write, or an agent-state write
///   an answer depends on, is outstanding, other events wait and are handled
///   after its outcome, in arrival order.
/// - **Admission is membership.** Once this node has committed, a peer may
///   hold a channel only if it is a member of the latest committed
///   configuration or of the one prepared (or coordinated) under a signed
///   ticket (``TrustQuorum/Node/admittedPeers``); the address book only
///   says where to dial. Before the first commit the address book and a
///   signed ticket's members are admitted. Denied device certificates are
///   refused whatever they name. Channels of peers that stop being admitted
///   are closed.
/// - **Refusals are logged.** A peer's message the node refuses (a forged
///   or unsigned decision) is logged with the sender and counted in the
///   status's `rejected`, never acted on.
/// - **Dialing.** This node dials the peers whose platform id sorts after
///   its own; the others dial it.
public struct AgentCore<Random: SecureRandomSource & Sendable>: Sendable {
    /// A channel as the shell numbers them.
    public typealias ConnectionID = UInt64
    /// An admin request as the shell numbers them.
    public typealias RequestID = UInt64

    /// What the core is told.
    public enum Event: Sendable, Equatable {
        /// The peer listener is bound on `listenPort`.
        case started(listenPort: Int)
        /// `peer` opened an attested channel.
        case peerAttached(PlatformId, connection: ConnectionID)
        /// The channel closed.
        case peerDetached(PlatformId, connection: ConnectionID)
        /// A protocol message arrived.
        case received(Message, from: PlatformId, connection: ConnectionID)
        /// A frame that does not decode arrived (`code`: the wire error's code).
        case malformedFrame(from: PlatformId, connection: ConnectionID, code: String)
        /// An admin request.
        case admin(AdminCommand, request: RequestID)
        /// ``Action/writeLedger(_:generation:)`` is on disk.
        case ledgerWritten(generation: UInt64)
        /// ``Action/writeLedger(_:generation:)`` failed.
        case ledgerWriteFailed(generation: UInt64, reason: String)
        /// ``Action/saveAgentState(_:)`` is on disk.
        case agentStateSaved(generation: UInt64)
        /// ``Action/saveAgentState(_:)`` failed.
        case agentStateSaveFailed(generation: UInt64, reason: String)
        /// The node is shutting down.
        case stopping
        /// Time passed: `now` is the time since the node started, on the
        /// shell's clock. Dial attempts that are due are started.
        case tick(now: Duration)
        /// An attempt to reach `peer` (``Action/connect(_:at:)``) ended at `now`.
        case dialEnded(PlatformId, DialOutcome, now: Duration)
    }

    /// How an attempt to reach a peer ended.
    public enum DialOutcome: Sendable, Equatable {
        /// No channel: the peer is down or unreachable (`reason` for the log).
        case unreachable(reason: String)
        /// A channel came up but the peer was not admitted (another platform,
        /// not in this rack, attestation failed): backed off like a failure,
        /// so a refusing peer is not hammered with handshakes.
        case refused
        /// The peer was admitted and its channel has closed: it may be
        /// restarting, so it is dialled again at once.
        case closed
    }

    /// What the core asks the shell to do, in order.
    public enum Action: Sendable, Equatable {
        /// Write `state` to the ledger as `generation`, then report the outcome.
        case writeLedger(PersistentState, generation: UInt64)
        /// Write the agent state, then report the outcome.
        case saveAgentState(AgentState)
        /// Send `message` on the channel `connection` to `peer`.
        case send(Message, to: PlatformId, connection: ConnectionID)
        /// Close the channel `connection`.
        case close(connection: ConnectionID)
        /// Try to reach `peer` at `address` once, then report ``Event/dialEnded(_:_:now:)``.
        case connect(PlatformId, at: PeerAddress)
        /// Abandon every attempt under way.
        case stopDialing
        /// Answer admin request `request`.
        case reply(RequestID, AdminResponse)
        /// Log a line.
        case log(AgentLog)
    }

    /// What does not change while the node runs.
    public struct Settings: Sendable, Equatable {
        /// This node's platform id.
        public var platform: PlatformId
        /// Its rack.
        public var rackId: RackId
        /// Its disk ids.
        public var disks: [String]
        /// The peers its configuration file names (they win over learnt ones).
        public var configuredPeers: [PlatformId: PeerAddress]
        /// Where it listens for peers (the port may be 0 until ``Event/started(listenPort:)``).
        public var listen: PeerAddress
        /// Whether peers' evidence is enforced.
        public var attestationEnforced: Bool

        /// Settings from their parts.
        public init(
            platform: PlatformId,
            rackId: RackId,
            disks: [String],
            configuredPeers: [PlatformId: PeerAddress],
            listen: PeerAddress,
            attestationEnforced: Bool
        ) {
            self.platform = platform
            self.rackId = rackId
            self.disks = disks
            self.configuredPeers = configuredPeers
            self.listen = listen
            self.attestationEnforced = attestationEnforced
        }
    }

    /// The settings.
    public let settings: Settings
    /// The trust-quorum state machine.
    public internal(set) var node: Node
    /// The ledger generation last written.
    public internal(set) var generation: UInt64
    /// The state as last written to the ledger: what survives a crash, and
    /// what the node reports (a halted node's memory may hold more).
    public internal(set) var durable: PersistentState
    /// Learnt peers, disks' keyed epochs and alarms, as last asked to be written.
    public internal(set) var agentState: AgentState
    /// Where each peer listens: the configuration file's, then the learnt ones.
    public internal(set) var addressBook: [PlatformId: PeerAddress]
    /// The epoch whose rack secret is loaded.
    public internal(set) var unlockedEpoch: Epoch?
    /// The check value of the unlocked epoch's rack secret (hex).
    var secretCheck: String?
    /// Why the node stopped taking part, once it did.
    public internal(set) var halted: String?
    /// Attested channels, by peer.
    public internal(set) var connections: [PlatformId: ConnectionID] = [:]
    /// Ledger or agent-state copies found unusable at start.
    public let startupProblems: [String]

    var random: Random
    var listenPort: Int
    var stopping = false
    var loadFailure: LoadRackSecretError.Code?
    /// The peers this node dials (those whose platform id sorts after its own), with their backoff.
    var dialers: [PlatformId: Dialer] = [:]
    var pending: Pending?
    var waitingEvents: [Event] = []
    var output: [Action] = []

    /// What a write outstanding holds back.
    enum Pending: Sendable {
        /// A ledger write; the node's `output` is released once it is on disk.
        case ledger(generation: UInt64, state: PersistentState, output: NodeOutput, request: RequestID?)
        /// An agent-state write an answer depends on.
        case agentState(generation: UInt64, undo: Undo, request: RequestID)
    }

    /// How to take back an agent-state change that did not reach the disk.
    enum Undo: Sendable {
        case peers([String: String])
        case disk(String, DiskKeyVersion?, now: DiskKeyVersion)
    }

    /// A core for a node that loaded `state` at `generation` from its ledger
    /// and `agentState` from beside it.
    public init(
        settings: Settings,
        state: PersistentState,
        generation: UInt64,
        agentState: AgentState,
        startupProblems: [String] = [],
        operatorVerifier: any DecisionVerifier,
        random: Random
    ) {
        self.settings = settings
        self.node = Node(
            platformId: settings.platform, rackId: settings.rackId, persistentState: state,
            operatorVerifier: operatorVerifier)
        self.durable = node.persistentState
        self.generation = generation
        self.agentState = agentState
        self.startupProblems = startupProblems
        self.random = random
        self.listenPort = settings.listen.port
        var book = settings.configuredPeers
        for (id, text) in agentState.peers {
            guard let peer = try? NodeConfiguration.platformId(id, field: "peers"), peer != settings.platform,
                book[peer] == nil,
                let address = try? PeerAddress(parsing: text, field: "peers")
            else { continue }
            book[peer] = address
        }
        self.addressBook = book
    }

    // MARK: - Queries the shell makes

    /// Whether `peer` may open a channel to this node.
    public func admits(_ peer: PlatformId) -> Bool {
        guard peer != settings.platform, !stopping, halted == nil else { return false }
        return admission.admits(peer)
    }

    /// Who may hold a channel now, as the TLS layer checks it.
    public var admission: Admission {
        if let members = node.admittedPeers { return Admission(peers: members) }
        return Admission(peers: Set(addressBook.keys).union(node.provisionalPeers).subtracting([settings.platform]))
    }

    /// Whether `connection` is `peer`'s current channel.
    public func isAttached(_ peer: PlatformId, connection: ConnectionID) -> Bool {
        connections[peer] == connection
    }

    /// Whether this node keeps dialing `peer`.
    public func isDialing(_ peer: PlatformId) -> Bool { dialers[peer] != nil && halted == nil && !stopping }

    /// When the next dial attempt is due (time since start), if one is
    /// waiting: the shell sends ``Event/tick(now:)`` then.
    public var nextTick: Duration? {
        guard halted == nil, !stopping else { return nil }
        return dialers.values.compactMap(\.due).min()
    }

    /// What this node reports about itself (with its LUKS2 volumes' statuses, which the shell keeps).
    public func status(volumes: [VolumeStatus] = []) -> NodeStatus {
        let state = durable
        return NodeStatus(
            platform: settings.platform,
            rackId: settings.rackId,
            listen: PeerAddress(host: settings.listen.host, port: listenPort).description,
            latestCommitted: state.latestCommittedConfiguration,
            commitSignature: state.latestCommittedEpoch.flatMap { state.commitSignatures[$0] },
            highestEpochSeen: [node.highestEpochSeen, state.latestKnownEpoch, node.coordinatorStatus?.epoch]
                .compactMap { $0 }.max(),
            unlockedEpoch: unlockedEpoch,
            secretCheck: secretCheck,
            computingShareEpoch: node.computingShareEpoch,
            coordinating: node.coordinatorStatus.map {
                CoordinatorReport(epoch: $0.epoch, configuration: $0.configuration, acked: $0.acked.sorted())
            },
            expunged: state.expunged,
            alarms: agentState.alarms,
            connected: connections.keys.sorted(),
            rekey: rekeys(),
            volumes: volumes,
            ledgerProblems: startupProblems,
            attestationEnforced: settings.attestationEnforced,
            rejected: node.rejectedShares + node.rejectedMessages
        )
    }

    // MARK: - Events

    /// Handles `event` and returns what to do, in order. A write outcome is
    /// handled at once; any other event that arrives while a write is
    /// outstanding is handled after the outcome.
    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .ledgerWritten, .ledgerWriteFailed, .agentStateSaved, .agentStateSaveFailed:
            apply(event)
        default:
            if pending != nil {
                waitingEvents.append(event)
            } else {
                apply(event)
            }
        }
        while pending == nil, !waitingEvents.isEmpty {
            apply(waitingEvents.removeFirst())
        }
        defer { output = [] }
        return output
    }

    mutating func apply(_ event: Event) {
        switch event {
        case .started(let port):
            listenPort = port
            flush(request: nil)
            startDialers()
        case .peerAttached(let peer, let id):
            attach(peer, id)
        case .peerDetached(let peer, let id):
            guard connections[peer] == id else { return }
            connections[peer] = nil
            node.disconnected(peer)
            log(.info, "peer disconnected", ["peer": "\(peer)"])
            flush(request: nil)
        case .received(let message, let peer, let id):
            guard halted == nil, connections[peer] == id else {
                emit(.close(connection: id))
                return
            }
            log(.debug, "received", ["peer": "\(peer)", "message": "\(message)"])
            node.received(from: peer, message: message)
            flush(request: nil)
        case .malformedFrame(let peer, let id, let code):
            log(.warning, "a peer sent a malformed message; closing its channel", ["peer": "\(peer)", "error": code])
            emit(.close(connection: id))
        case .admin(let command, let request):
            admin(command, request)
        case .ledgerWritten(let written):
            guard case .ledger(let generation, let state, let output, let request) = pending,
                generation == written
            else { return }
            pending = nil
            self.generation = generation
            durable = state
            release(output)
            if let request { emit(.reply(request, haltedOrOK())) }
        case .ledgerWriteFailed(let failed, let reason):
            guard case .ledger(let generation, _, _, let request) = pending, generation == failed else { return }
            pending = nil
            // Nothing may be sent that depends on state that is not on disk: stop taking part.
            halt("the ledger cannot be written (\(reason)); this node stops taking part until restarted")
            if let request { emit(.reply(request, haltedOrOK())) }
        case .agentStateSaved(let saved):
            guard case .agentState(let generation, let undo, let request) = pending, generation == saved else {
                return
            }
            pending = nil
            if case .disk(let disk, _, let epoch) = undo {
                log(.notice, "disk re-keyed", ["disk": disk, "epoch": "\(epoch)"])
            }
            emit(.reply(request, AdminResponse()))
        case .agentStateSaveFailed(let failed, let reason):
            log(.error, "cannot write the agent state", ["reason": reason])
            guard case .agentState(let generation, let undo, let request) = pending, generation == failed else {
                return
            }
            pending = nil
            switch undo {
            case .peers(let before):
                // The new peers are dialed now; they are recorded when a write succeeds.
                agentState.peers = before
            case .disk(let disk, let before, _):
                // Not recorded: the re-key keeps being reported.
                agentState.setKeyed(disk, before)
            }
            emit(
                .reply(
                    request, AdminResponse(error: AdminError(.stateWrite, "cannot write the agent state: \(reason)"))))
        case .stopping:
            stopping = true
            closeEverything()
        case .tick(let now):
            dialDue(now: now)
        case .dialEnded(let peer, let outcome, let now):
            dialEnded(peer, outcome, now: now)
        }
    }

    // MARK: - Channels

    mutating func attach(_ peer: PlatformId, _ id: ConnectionID) {
        guard halted == nil, !stopping else {
            emit(.close(connection: id))
            return
        }
        if let old = connections[peer] {
            // The peer reconnected (it restarted, or the old channel is half dead): the newer channel wins.
            emit(.close(connection: old))
            node.disconnected(peer)
        }
        connections[peer] = id
        log(.info, "peer connected and attested", ["peer": "\(peer)"])
        node.connected(peer)
        flush(request: nil)
    }

    /// Closes the channels of peers that are no longer admitted (removed by a commit).
    mutating func closeUnadmitted() {
        let admission = self.admission
        for (peer, id) in connections.sorted(by: { $0.value < $1.value }) where !admission.admits(peer) {
            log(.notice, "closing the channel of a peer that is no longer a member", ["peer": "\(peer)"])
            emit(.close(connection: id))
            connections[peer] = nil
            node.disconnected(peer)
        }
    }

    mutating func closeEverything() {
        for id in connections.values.sorted() { emit(.close(connection: id)) }
        connections = [:]
        dialers = [:]
        emit(.stopDialing)
    }

    // MARK: - Carrying out the node's output

    /// Unlocks if possible, then writes the ledger (if the state changed)
    /// before anything that depends on it goes out; answers `request` last.
    mutating func flush(request: RequestID?) {
        guard halted == nil else {
            if let request { emit(.reply(request, haltedOrOK())) }
            return
        }
        pollUnlock()
        let output = node.drainOutput()
        for refusal in output.refusals {
            log(
                .warning, "refused a peer's message; nothing was acted on",
                ["peer": "\(refusal.from)", "message": refusal.message, "reason": refusal.reason])
        }
        closeUnadmitted()
        if output.persistentStateChanged {
            let next = generation + 1
            emit(.writeLedger(node.persistentState, generation: next))
            pending = .ledger(generation: next, state: node.persistentState, output: output, request: request)
            return
        }
        release(output)
        if let request { emit(.reply(request, AdminResponse())) }
    }

    /// Carries out what the node asked for once the state it depends on is
    /// on disk: its messages go on the peers' channels as they are at this
    /// moment (one for a peer that is not connected is dropped: the node
    /// resends on connect), then its warnings and alarms are logged, and the
    /// alarms recorded in the agent state.
    mutating func release(_ output: NodeOutput) {
        for outgoing in output.messages {
            guard let id = connections[outgoing.to] else { continue }
            emit(.send(outgoing.message, to: outgoing.to, connection: id))
        }
        for warning in output.warnings { log(.warning, "\(warning)") }
        guard !output.alarms.isEmpty else { return }
        for alarm in output.alarms { log(.error, "ALARM \(alarm.name)", ["alarm": "\(alarm)"]) }
        recordAlarms(output.alarms.map(\.description))
        saveAgentState()
    }

    /// Appends `alarms` to the agent state, keeping the latest ``AgentState/maximumAlarms``.
    mutating func recordAlarms(_ alarms: [String]) {
        agentState.alarms = Array((agentState.alarms + alarms).suffix(AgentState.maximumAlarms))
    }

    mutating func halt(_ reason: String) {
        halted = reason
        log(.critical, reason)
        recordAlarms(["NodeHalted: \(reason)"])
        saveAgentState()
        closeEverything()
    }

    /// Loads the latest committed epoch's rack secret if it is not loaded yet.
    mutating func pollUnlock() {
        guard let latest = node.persistentState.latestCommittedEpoch, unlockedEpoch != latest else { return }
        do {
            guard let secret = try node.loadRackSecret(latest) else { return }
            unlockedEpoch = latest
            secretCheck = KeyDerivation.checkValue(secret: secret, rackId: settings.rackId, epoch: latest).hexString
            loadFailure = nil
            log(.notice, "unlocked: rack secret loaded", ["epoch": "\(latest)"])
            // A disk first opened now is keyed under this epoch, with the current scheme.
            let unrecorded = settings.disks.filter { agentState.disks[$0] == nil }
            if !unrecorded.isEmpty {
                for disk in unrecorded { agentState.setKeyed(disk, DiskKeyVersion(latest)) }
                saveAgentState()
            }
            for rekey in rekeys() {
                log(
                    .notice, "disk needs re-keying",
                    ["disk": rekey.disk, "from": "\(rekey.fromKey)", "to": "\(rekey.toKey)"])
            }
        } catch {
            if loadFailure != error.code {
                loadFailure = error.code
                log(.error, "cannot load the rack secret", ["error": "\(error)"])
            }
        }
    }

    /// Disks keyed under an older epoch than the latest committed, or
    /// under an earlier release's disk-only key, each from the key it is
    /// keyed under (acknowledged with `diskRekeyed`).
    func rekeys() -> [DiskRekey] {
        guard let latest = node.persistentState.latestCommittedEpoch else { return [] }
        let target = DiskKeyVersion(latest)
        return settings.disks.compactMap { disk in
            guard let keyed = agentState.keyed(disk), keyed < target else { return nil }
            return DiskRekey(disk: disk, from: keyed, to: target)
        }
    }

    /// Asks for the next generation of the agent state to be written; its
    /// failure is logged, never fatal (it holds no share).
    mutating func saveAgentState() {
        agentState.advanceGeneration()
        emit(.saveAgentState(agentState))
    }

    // MARK: - Output

    mutating func emit(_ action: Action) { output.append(action) }

    mutating func log(_ level: Logger.Level, _ message: String, _ metadata: [String: String] = [:]) {
        emit(.log(AgentLog(level, message, metadata)))
    }
}

/// The platforms that may hold a channel to a node, as its TLS verification
/// callback checks them, before any frame.
public struct Admission: Sendable, Equatable {
    /// The admitted platforms.
    public var peers: Set<PlatformId>

    /// An admission of exactly `peers`.
    public init(peers: Set<PlatformId>) { self.peers = peers }

    /// Whether `peer` is admitted.
    public func admits(_ peer: PlatformId) -> Bool { peers.contains(peer) }
}

/// A line the core asks the shell to log.
public struct AgentLog: Sendable, Equatable {
    /// Its level.
    public var level: Logger.Level
    /// The message.
    public var message: String
    /// Its metadata (never a secret).
    public var metadata: [String: String]

    /// A line from its parts.
    public init(_ level: Logger.Level, _ message: String, _ metadata: [String: String] = [:]) {
        self.level = level
        self.message = message
        self.metadata = metadata
    }
}
