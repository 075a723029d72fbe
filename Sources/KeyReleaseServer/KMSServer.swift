import Attestation
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import KeyRelease
import Logging
import NIOCore
import NIOSSL
import RedisClient
import ServiceLifecycle
import UnixSignals

/// `keyrack kms serve`: assembles the store, key provider, policy, verifier
/// and routes from a ``KMSConfiguration`` and serves until SIGTERM or SIGINT
/// (graceful shutdown: in-flight requests finish).
public enum KMSServer {
    /// Builds everything and serves. Start-up problems (an unreadable root
    /// file, a bad trust anchor, a broken TLS key) throw before listening.
    public static func run(
        configuration: KMSConfiguration,
        logger: Logger,
        metrics: KMSMetrics = KMSMetrics(),
        onListening: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws {
        let connections = ConnectionLimiter(maximum: configuration.maximumConnections)
        let descriptors = raiseOpenFileLimit()
        if descriptors < configuration.maximumConnections + 256 {
            logger.warning(
                "the open-file limit is below MAX_CONNECTIONS: connections past it fail at accept instead of being counted",
                metadata: ["limit": "\(descriptors)", "MAX_CONNECTIONS": "\(configuration.maximumConnections)"])
        }
        let store: any ChallengeStore
        var redisClient: (any RedisCommanding)?
        if let cluster = configuration.redisCluster {
            let client = RedisClusterClient(configuration: cluster)
            redisClient = client
            store = RedisChallengeStore(client: client, totalShards: 16)
            logger.info("challenge store: Redis Cluster", metadata: ["redis": "\(cluster)"])
        } else if let redis = configuration.redis {
            let client = RedisClient(configuration: redis)
            redisClient = client
            store = RedisChallengeStore(client: client)
            logger.info("challenge store: redis", metadata: ["redis": "\(redis)"])
        } else {
            store = MemoryChallengeStore()
            logger.info("challenge store: memory (single replica)")
        }
        defer { redisClient?.shutdown() }

        let keys: any KeyProvider
        switch configuration.keyProvider {
        case .local:
            keys = try LocalKeyProvider(rootFile: configuration.keyRootFile)
            logger.info("key provider: local", metadata: ["rootFile": "\(configuration.keyRootFile)"])
        case .dstack:
            keys = DstackKeyProvider(socketPath: configuration.dstackSocketPath)
            logger.info("key provider: dstack", metadata: ["socket": "\(configuration.dstackSocketPath)"])
        }

        let anchor: TrustAnchor
        if let path = configuration.trustAnchorFile {
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw KMSConfigurationError(.unreadable, "TRUST_ANCHOR: cannot read \(path)")
            }
            do {
                anchor = try TrustAnchor(bytes: Array(bytes))
            } catch {
                throw KMSConfigurationError(.content, "TRUST_ANCHOR: \(error.reason)")
            }
            logger.warning("trust anchor from TRUST_ANCHOR, not Intel's SGX root CA", metadata: ["file": "\(path)"])
        } else {
            anchor = .intelSGXRootCA
        }
        let verifier = TDXEvidenceVerifier(
            trustAnchor: anchor,
            collateralDirectory: configuration.collateralDirectory.map { URL(fileURLWithPath: $0) },
            pccsURL: configuration.pccsURL
        )
        if let url = configuration.pccsURL {
            logger.info("collateral: fetched from a PCCS on first use", metadata: ["pccs": "\(url)"])
        }
        for (file, reason) in verifier.skippedCollateralFiles {
            logger.warning("skipped a file in COLLATERAL_DIR", metadata: ["file": "\(file)", "reason": "\(reason)"])
        }
        if let reason = verifier.notReadyReason(now: Date()) {
            logger.warning(
                "collateral not ready: key release answers 503 PolicyNotReady", metadata: ["reason": "\(reason)"])
        }

        let policies = PolicyHolder(path: configuration.policyFile)
        if let error = policies.lastError {
            logger.warning(
                "no attestation policy: key release answers 503 PolicyNotReady", metadata: ["reason": "\(error)"])
        }

        let service = KeyReleaseService(
            settings: .init(
                challengeTTL: .seconds(configuration.challengeTTLSeconds),
                maximumPending: configuration.maximumPendingChallenges,
                maximumPendingTotal: configuration.maximumPendingChallengesTotal,
                namespace: configuration.keyNamespacePrefix
            ),
            store: store,
            keys: keys,
            policies: policies,
            verifier: verifier,
            metrics: metrics,
            audit: Logger(label: "keyrack.kms.audit")
        )
        let router = KMSRoutes.router(service: service, connections: connections)
        let address = BindAddress.hostname(configuration.listenHost, port: configuration.listenPort)
        let timeout = TimeAmount.seconds(Int64(configuration.idleTimeoutSeconds))
        let http = HTTPServerBuilder.http1(
            configuration: .init(additionalChannelHandlers: [ConnectionGuard(limiter: connections, timeout: timeout)])
        )
        let server: HTTPServerBuilder
        let scheme: String
        if let certificate = configuration.tlsCertificateFile, let key = configuration.tlsKeyFile {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(certificate).map {
                    NIOSSLCertificateSource.certificate($0)
                }
                var tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: chain,
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                )
                tls.minimumTLSVersion = .tlsv12
                server = try .tls(http, tlsConfiguration: tls)
            } catch {
                throw KMSConfigurationError(
                    .content, "TLS_CERT: cannot load the TLS certificate or key: \(error)")
            }
            scheme = "https"
        } else {
            server = http
            scheme = "http"
            if !isLoopbackHost(configuration.listenHost) {
                logger.warning(
                    "serving plain HTTP beyond loopback: peers' requests cross the network unencrypted; set TLS_CERT and TLS_KEY, or put a TLS terminator in front",
                    metadata: ["listen": "\(configuration.listenHost):\(configuration.listenPort)"])
            }
        }
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: address, serverName: "keyrack-kms"),
            services: [
                PolicyReloader(holder: policies, logger: logger),
                CollateralReloader(verifier: verifier, logger: logger),
            ],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.listenPort
                let url = "\(scheme)://\(configuration.listenHost):\(port)"
                logger.info("listening", metadata: ["url": "\(url)"])
                onListening(url)
            },
            logger: logger
        )
        try await app.runService()
    }
}

/// Lifts the soft open-file limit to the hard one and returns it.
@discardableResult
public func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}

/// Reloads the policy on SIGHUP and when its file changes (checked every
/// second). A failed reload keeps the last good policy and logs why.
struct PolicyReloader: Service {
    let holder: PolicyHolder
    let logger: Logger

    func run() async throws {
        // A service that returns ends the whole group: without a file, wait for shutdown.
        guard holder.path != nil else { return try await gracefulShutdown() }
        await reloadOnSIGHUPAndChange(
            sighup: { report(holder.reload(), trigger: "SIGHUP") },
            tick: { if let result = holder.reloadIfChanged() { report(result, trigger: "file changed") } })
    }

    private func report(_ result: Result<Void, PolicyError>, trigger: String) {
        switch result {
        case .success: logger.info("policy reloaded", metadata: ["trigger": "\(trigger)"])
        case .failure(let error):
            logger.error(
                "policy reload failed; keeping the last good policy",
                metadata: ["trigger": "\(trigger)", "reason": "\(error.reason)"]
            )
        }
    }
}

/// Reloads `COLLATERAL_DIR` on SIGHUP and when a file in it changes (checked
/// every second). A failed reload keeps the last good collateral and logs why.
struct CollateralReloader: Service {
    let verifier: TDXEvidenceVerifier
    let logger: Logger

    func run() async throws {
        guard verifier.readsCollateralDirectory else { return try await gracefulShutdown() }
        await reloadOnSIGHUPAndChange(
            sighup: { if let result = verifier.reloadCollateral() { report(result, trigger: "SIGHUP") } },
            tick: {
                if let result = verifier.reloadCollateralIfChanged() { report(result, trigger: "directory changed") }
            })
    }

    private func report(_ result: Result<Void, EvidenceFailure>, trigger: String) {
        switch result {
        case .success:
            logger.info("collateral reloaded", metadata: ["trigger": "\(trigger)"])
            for (file, reason) in verifier.skippedCollateralFiles {
                logger.warning(
                    "skipped a file in COLLATERAL_DIR", metadata: ["file": "\(file)", "reason": "\(reason)"])
            }
        case .failure(let error):
            logger.error(
                "collateral reload failed; keeping the last good collateral",
                metadata: ["trigger": "\(trigger)", "reason": "\(error.reason)"])
        }
    }
}

/// Runs `sighup` on every SIGHUP and `tick` every second, until graceful shutdown.
func reloadOnSIGHUPAndChange(sighup: @escaping @Sendable () -> Void, tick: @escaping @Sendable () -> Void) async {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            for await _ in signals.cancelOnGracefulShutdown() { sighup() }
        }
        group.addTask {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                try? await Task.sleep(for: .seconds(1))
                tick()
            }
        }
        await group.next()
        group.cancelAll()
    }
}
