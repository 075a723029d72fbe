import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import TrustQuorum
import X509

/// The admin API over the network (`"adminListen": "ADDR:PORT"`): the
/// frames of the admin socket inside mutually authenticated TLS 1.3. The
/// node presents its device certificate (its key stays in the root of
/// trust); the client must present an operator certificate — the operator
/// role, issued by the intermediate of the operator CA the node pins
/// (`identity.operatorCA`), valid now — or the handshake fails. What an
/// operator may ask over the network is the node's to decide
/// (``NodeRuntime``): everything but a disk key, unless the configuration
/// sets `allowNetworkDiskKey`.
///
/// Bounded like the peer listener: at most ``maximumConnections``
/// connections at once and ``maximumConnectionsPerAddress`` from one
/// address (more are closed as they are accepted), the handshake and first
/// request within ``requestDeadline``, and a connection idle for
/// ``idleTimeout`` after an answer is closed. A connection may carry many
/// requests, one at a time: the operator keeps one per node while it polls.
public enum AdminNetwork {
    /// The handshake and the first request must arrive within this.
    public static let requestDeadline: TimeAmount = .seconds(5)
    /// A connection with no request for this long after an answer is closed.
    public static let idleTimeout: TimeAmount = .seconds(30)
    /// Connections at once, from anyone.
    public static let maximumConnections = 32
    /// Connections at once from one address.
    public static let maximumConnectionsPerAddress = 8

    /// Listens on `address` with the node's `identity`, admitting operator
    /// certificates `operators` accepts, and answers each request with `handle`.
    static func listen(
        on address: PeerAddress,
        identity: NodeTLSIdentity,
        operators: OperatorCertificateVerifier,
        requestDeadline: TimeAmount = requestDeadline,
        handle: @escaping @Sendable (AdminRequest, AdminCaller) async -> AdminResponse
    ) async throws(AdminError) -> AdminListener {
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: identity.configuration(server: true))
        } catch {
            throw AdminError(.authentication, "cannot set up the admin listener's TLS: \(error)")
        }
        let limiter = HandshakeLimiter(total: maximumConnections, perAddress: maximumConnectionsPerAddress)
        let server: NIOAsyncChannel<AdminConnection, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: address.host, port: address.port) { channel in
                    let remote = channel.remoteAddress?.ipAddress ?? "?"
                    let from = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                    guard limiter.acquire(remote) else {
                        channel.close(promise: nil)
                        return channel.eventLoop.makeFailedFuture(
                            AdminError(.unreachable, "too many admin connections (from \(remote))"))
                    }
                    channel.closeFuture.whenComplete { _ in limiter.release(remote) }
                    let verified = Mutex<String?>(nil)
                    let verify: NIOSSLCustomVerificationCallback = { presented, promise in
                        // Only the leaf counts: the chain is exactly leaf → pinned intermediate → pinned root.
                        guard presented.count <= NodeTLSIdentity.maximumPresentedCertificates,
                            let leaf = try? presented.first?.toDERBytes(), let name = operators.operatorName(leaf)
                        else {
                            promise.succeed(.failed)
                            return
                        }
                        verified.withLock { $0 = name }
                        promise.succeed(.certificateVerified)
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLServerHandler(context: context, customVerificationCallback: verify))
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                        let wrapped = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                        return AdminConnection(
                            channel: wrapped,
                            caller: { verified.withLock { $0 }.map { .networkOperator(name: $0, from: from) } })
                    }
                }
        } catch {
            throw AdminError(.socket, "cannot listen for the admin API on \(address): \(error)")
        }
        return AdminListener(
            server: server, requestDeadline: requestDeadline, idleTimeout: idleTimeout, handle: handle)
    }
}

/// What the operator presents to nodes over the network, and how it judges
/// them: its operator certificate and key (``OperatorIdentity``), and the
/// manufacturing intermediate and root a node's device certificate must
/// chain to (`operator-ca.pem`: the operator certificate is issued by the
/// same CA). The node's platform id is read from its verified certificate.
public struct AdminCredentials: Sendable {
    let certificate: NIOSSLCertificate
    let key: NIOSSLPrivateKey
    let intermediate: Certificate
    let root: Certificate
    let rootNIO: NIOSSLCertificate
    /// The operator's name.
    public let name: String

    /// The credentials of the operator identity in `directory` (`keyrack operator init`).
    public init(operatorDirectory directory: URL) throws(IdentityFileError) {
        let identity = try OperatorIdentity(directory: directory)
        let verifier = try OperatorCertificateVerifier(
            bundle: directory.appendingPathComponent("operator-ca.pem").path)
        try self.init(identity: identity, intermediate: verifier.intermediate, root: verifier.root)
    }

    /// Credentials from an opened identity and the CA nodes chain to.
    public init(identity: OperatorIdentity, intermediate: Certificate, root: Certificate) throws(IdentityFileError) {
        do {
            certificate = try NIOSSLCertificate(bytes: identity.certificateDER, format: .der)
            rootNIO = try NIOSSLCertificate(root)
        } catch {
            throw IdentityFileError(.format, "the operator certificate or the CA root does not load into TLS")
        }
        key = identity.tlsKey
        self.intermediate = intermediate
        self.root = root
        name = identity.name
    }

    func configuration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = [.certificate(certificate)]
        configuration.privateKey = .privateKey(key)
        // The verification callback decides; the root keeps BoringSSL away from the system store.
        configuration.trustRoots = .certificates([rootNIO])
        configuration.certificateVerification = .noHostnameVerification
        configuration.verifySignatureAlgorithms = [
            .ed25519, .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512, .ecdsaSecp256R1Sha256,
        ]
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        return configuration
    }
}

/// The operator's side of the admin API: sends a request to a node at an
/// ``AdminEndpoint`` — its Unix socket, or over the network with
/// ``credentials`` — and keeps one connection per network node for the
/// next request (a rack operator polls every node many times a second; a
/// TLS handshake per poll would cost more than the rack's own work).
/// A connection idle for ``reuseLimit`` is not reused (the node closes
/// idle ones). A status request that finds its reused connection closed
/// is sent once more on a fresh one; nothing else is ever sent twice.
public actor AdminClient {
    /// The operator's credentials for network nodes (`nil`: sockets only).
    public let credentials: AdminCredentials?
    /// A pooled connection idle longer than this is closed instead of reused.
    public static let reuseLimit = Duration.seconds(10)
    /// How long a TCP connection may take to establish.
    public static let connectTimeout = TimeAmount.seconds(3)
    private var idle: [PeerAddress: [(connection: AdminNetworkConnection, since: ContinuousClock.Instant)]] = [:]
    private var context: NIOSSLContext?

    /// A client; `credentials` are needed for network endpoints.
    public init(credentials: AdminCredentials? = nil) {
        self.credentials = credentials
    }

    /// A client for the operator identity in `directory`.
    public init(operatorDirectory directory: URL) throws(IdentityFileError) {
        self.init(credentials: try AdminCredentials(operatorDirectory: directory))
    }

    /// Sends `request` to `endpoint` and returns the node's answer (which may carry an error).
    public func call(
        _ request: AdminRequest, at endpoint: AdminEndpoint, timeout: Duration = .seconds(10)
    ) async throws(AdminError) -> AdminResponse {
        switch endpoint {
        case .socket(let path):
            return try await AdminSocket.call(request, path: path, timeout: timeout)
        case .network(let address):
            return try await callNetwork(request, address: address, timeout: timeout)
        }
    }

    /// Sends `request` and returns the response, or throws the node's error.
    public func perform(
        _ request: AdminRequest, at endpoint: AdminEndpoint, timeout: Duration = .seconds(10)
    ) async throws(AdminError) -> AdminResponse {
        let response = try await call(request, at: endpoint, timeout: timeout)
        if let error = response.error { throw error }
        return response
    }

    /// Closes every pooled connection.
    public func close() {
        for connections in idle.values { for entry in connections { entry.connection.close() } }
        idle = [:]
    }

    private func callNetwork(
        _ request: AdminRequest, address: PeerAddress, timeout: Duration
    ) async throws(AdminError) -> AdminResponse {
        let body: Data
        do {
            body = try JSONEncoder().encode(request)
        } catch {
            throw AdminError(.request, "cannot encode the request: \(error)")
        }
        var attempt = 0
        while true {
            attempt += 1
            let (connection, reused) = try await connection(to: address)
            let reply = await connection.exchange(ByteBuffer(bytes: body), timeout: timeout)
            guard let reply else {
                connection.close()
                if reused, attempt == 1, request.operation == .status { continue }
                if let reason = connection.failureReason {
                    throw AdminError(.unreachable, "cannot reach the node at \(address): \(reason)")
                }
                throw AdminError(
                    .unreachable, "cannot reach the node at \(address): no answer within \(timeout)")
            }
            idle[address, default: []].append((connection, ContinuousClock.now))
            let response: AdminResponse
            do {
                response = try JSONDecoder().decode(AdminResponse.self, from: Data(reply.readableBytesView))
            } catch {
                throw AdminError(.response, "the node at \(address) answered something unreadable")
            }
            // A node answers for the platform its certificate names, or not at all.
            if let status = response.status, status.platform != connection.platform {
                connection.close()
                throw AdminError(
                    .authentication,
                    "the node at \(address) presented the certificate of \(connection.platform.map { "\($0)" } ?? "nobody") but reports being \(status.platform)"
                )
            }
            return response
        }
    }

    /// A pooled connection to `address`, or a new one.
    private func connection(to address: PeerAddress) async throws(AdminError) -> (AdminNetworkConnection, Bool) {
        while var pooled = idle[address], !pooled.isEmpty {
            let entry = pooled.removeLast()
            idle[address] = pooled
            if entry.connection.isOpen, entry.since.duration(to: .now) < Self.reuseLimit {
                return (entry.connection, true)
            }
            entry.connection.close()
        }
        guard let credentials else {
            throw AdminError(
                .authentication,
                "\(address) is a network address: reaching a node over the network needs the operator identity (--operator DIR)"
            )
        }
        let tls: NIOSSLContext
        if let existing = context {
            tls = existing
        } else {
            do {
                tls = try NIOSSLContext(configuration: credentials.configuration())
            } catch {
                throw AdminError(.authentication, "cannot set up TLS with the operator's credentials: \(error)")
            }
            context = tls
        }
        return (try await AdminNetworkConnection.open(address, context: tls, credentials: credentials), false)
    }
}

/// One TLS connection to a node's admin listener; requests go through
/// ``exchange(_:timeout:)`` one at a time. The platform id the node's
/// verified certificate names is known once the handshake is done (before
/// any answer arrives).
final class AdminNetworkConnection: Sendable {
    private let channel: any Channel
    private let requests: AsyncStream<(ByteBuffer, CheckedContinuation<ByteBuffer?, Never>)>.Continuation
    private let open = Mutex(true)
    private let judged: JudgedNode
    private let failure = Mutex<String?>(nil)

    /// The platform the node's certificate names (`nil` before the handshake).
    var platform: PlatformId? { judged.platform }
    /// Why the connection failed, when it did (a refused certificate, a TLS alert).
    var failureReason: String? { judged.refusal ?? failure.withLock { $0 } }
    var isOpen: Bool { open.withLock { $0 } && channel.isActive }

    static func open(
        _ address: PeerAddress, context: NIOSSLContext, credentials: AdminCredentials
    ) async throws(AdminError) -> AdminNetworkConnection {
        let judged = JudgedNode()
        let intermediate = credentials.intermediate
        let root = credentials.root
        let verify: @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResult>) -> Void = {
            presented, promise in
            guard let encoded = try? presented.map({ try $0.toDERBytes() }) else {
                judged.refused("the node presented a certificate that does not encode")
                promise.succeed(.failed)
                return
            }
            Task(executorPreference: VerificationExecutor.shared) {
                switch await NodeTLSIdentity.judgeChain(encoded, intermediate: intermediate, root: root) {
                case .admitted(let platform, _):
                    judged.admitted(platform)
                    promise.succeed(.certificateVerified)
                case .refused(let reason):
                    judged.refused("its certificate is refused: \(reason)")
                    promise.succeed(.failed)
                }
            }
        }
        let wrapped: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            wrapped = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(AdminClient.connectTimeout)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let tls = try NIOSSLClientHandler(
                            context: context, serverHostname: nil, customVerificationCallback: verify)
                        try channel.pipeline.syncOperations.addHandler(tls)
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw AdminError(.unreachable, "cannot reach the node at \(address): \(error)")
        }
        let (stream, continuation) = AsyncStream<(ByteBuffer, CheckedContinuation<ByteBuffer?, Never>)>
            .makeStream()
        let connection = AdminNetworkConnection(
            channel: wrapped.channel, judged: judged, requests: continuation)
        Task {
            do {
                try await wrapped.executeThenClose { inbound, outbound in
                    var replies = inbound.makeAsyncIterator()
                    for await (frame, reply) in stream {
                        do {
                            try await outbound.write(frame)
                            let answer = try await replies.next()
                            reply.resume(returning: answer)
                            if answer == nil { break }
                        } catch {
                            connection.failed("\(error)")
                            reply.resume(returning: nil)
                            break
                        }
                    }
                }
            } catch {
                connection.failed("\(error)")
            }
            connection.close()
            // Whatever was queued behind a failure is answered with nothing.
            for await (_, reply) in stream { reply.resume(returning: nil) }
        }
        return connection
    }

    private init(
        channel: any Channel, judged: JudgedNode,
        requests: AsyncStream<(ByteBuffer, CheckedContinuation<ByteBuffer?, Never>)>.Continuation
    ) {
        self.channel = channel
        self.judged = judged
        self.requests = requests
    }

    /// Sends `frame` and waits for the answer; `nil` when the connection
    /// closed first or nothing came within `timeout` (the connection is then closed).
    func exchange(_ frame: ByteBuffer, timeout: Duration) async -> ByteBuffer? {
        guard isOpen else { return nil }
        let channel = channel
        let timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { channel.close(promise: nil) }
        defer { timer.cancel() }
        return await withCheckedContinuation { reply in
            if case .terminated = requests.yield((frame, reply)) { reply.resume(returning: nil) }
        }
    }

    private func failed(_ reason: String) { failure.withLock { $0 = $0 ?? reason } }

    func close() {
        open.withLock { $0 = false }
        requests.finish()
        channel.close(promise: nil)
    }
}

/// What the client's verification callback decided about a node's certificate.
final class JudgedNode: Sendable {
    private let state = Mutex<(platform: PlatformId?, refusal: String?)>((nil, nil))
    func admitted(_ platform: PlatformId) { state.withLock { $0.platform = platform } }
    func refused(_ reason: String) { state.withLock { $0.refusal = reason } }
    var platform: PlatformId? { state.withLock { $0.platform } }
    var refusal: String? { state.withLock { $0.refusal } }
}
