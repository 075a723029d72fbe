import Foundation
import Logging
import TrustQuorum
import X509

extension NodeRuntime {
    /// Opens everything `configuration` names — the root of trust, the
    /// device certificate (which must chain to the manufacturing root and
    /// name this platform), the attestation policy and evidence source, the
    /// ledger — and returns a node ready to ``run(onReady:)``.
    public static func open(
        configuration: NodeConfiguration,
        logger: Logger,
        crashAfterPersist: Int? = nil,
        volumeOptions: VolumeOptions = VolumeOptions(),
        reinitialise: Bool = false
    ) async throws(NodeRuntimeError) -> NodeRuntime {
        let rootOfTrust: SoftwareRootOfTrust
        do {
            rootOfTrust = try SoftwareRootOfTrust(keyFile: configuration.deviceKey)
        } catch {
            throw NodeRuntimeError(.identity, error.reason)
        }
        let device = try certificate(configuration.certificate, role: "device certificate")
        let intermediate = try certificate(configuration.intermediate, role: "intermediate CA certificate")
        let root = try certificate(configuration.root, role: "manufacturing root certificate")
        let certified: PlatformId
        do {
            certified = try await DeviceIdentity.verify(device, intermediates: [intermediate], root: root)
        } catch {
            throw NodeRuntimeError(.identity, "\(configuration.certificate): \(error.reason)")
        }
        guard certified == configuration.platform else {
            throw NodeRuntimeError(
                .identity,
                "the device certificate names \(certified), but the configuration says \(configuration.platform)")
        }
        guard device.publicKey == rootOfTrust.publicKey else {
            throw NodeRuntimeError(.identity, "the device certificate is not for this root of trust's key")
        }
        let identity: NodeTLSIdentity
        do {
            identity = try NodeTLSIdentity(
                device: device,
                intermediate: intermediate,
                root: root,
                rootOfTrust: rootOfTrust
            )
        } catch {
            throw NodeRuntimeError(.identity, error.reason)
        }
        let operatorVerifier: OperatorCertificateVerifier
        do {
            operatorVerifier = try OperatorCertificateVerifier(bundle: configuration.operatorCA)
        } catch {
            throw NodeRuntimeError(.identity, "identity.operatorCA: \(error.reason)")
        }
        let (hook, policies) = try attestationHook(
            configuration: configuration, rootOfTrust: rootOfTrust, operatorVerifier: operatorVerifier,
            logger: logger)
        return try NodeRuntime(
            configuration: configuration,
            rootOfTrust: rootOfTrust,
            identity: identity,
            attestation: hook,
            attestationEnforced: policies.policy.mode == .enforce,
            operatorVerifier: operatorVerifier,
            logger: logger,
            crashAfterPersist: crashAfterPersist,
            volumeOptions: volumeOptions,
            reinitialise: reinitialise,
            networkOperators: operatorVerifier,
            policies: policies
        )
    }

    static func certificate(_ path: String, role: String) throws(NodeRuntimeError) -> Certificate {
        do {
            return try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8))
        } catch {
            throw NodeRuntimeError(.identity, "cannot read the \(role) at \(path) (PEM expected)")
        }
    }

    /// The channel attestor the configuration asks for: the policy peers
    /// are appraised against and the evidence this node presents. The
    /// executable is measured here, at start, not inside a handshake. The
    /// policy is the node's ``NodePolicyStore``: an operator-signed one
    /// persisted in the ledger directories, else the configuration's file.
    static func attestationHook(
        configuration: NodeConfiguration,
        rootOfTrust: SoftwareRootOfTrust,
        operatorVerifier: any DecisionVerifier,
        logger: Logger
    ) throws(NodeRuntimeError) -> (ChannelAttestationHook, NodePolicyStore) {
        let evidence: NodeEvidenceSource
        do {
            if configuration.evidence.hasPrefix("software-tee:") {
                let directory = String(configuration.evidence.dropFirst("software-tee:".count))
                evidence = .tdxQuote(try SoftwareTEEQuoteProvider(directory: URL(fileURLWithPath: directory)))
            } else if configuration.evidence == "tdx" {
                evidence = .tdxQuote(ConfigfsTSMQuoteProvider())
            } else {
                // The measurement cache lives beside the first ledger copy (it holds no secret).
                let cache = URL(fileURLWithPath: configuration.ledger[0]).appendingPathComponent("measurements")
                evidence = .softwareRootOfTrust(measurementCacheDirectory: cache)
            }
        } catch {
            throw NodeRuntimeError(.evidence, "cannot set up this node's evidence: \(error.reason)")
        }
        let ownLog: MeasurementLog?
        do {
            ownLog = try evidence.prepare()
        } catch {
            throw NodeRuntimeError(.evidence, "cannot measure this node: \(error.reason)")
        }
        let store: NodePolicyStore
        do {
            store = try NodePolicyStore(
                file: URL(fileURLWithPath: configuration.policy),
                directories: configuration.ledger.map { URL(fileURLWithPath: $0) },
                rackId: configuration.rackId, verifier: operatorVerifier,
                // A quote cannot be judged before it is made inside a handshake; a measurement log can.
                selfCheck: { policy in ownLog.map { policy.ownViolations($0) } ?? [] })
        } catch {
            throw NodeRuntimeError(.policy, error.reason)
        }
        let attestor = ChannelAttestor(
            rootOfTrust: rootOfTrust,
            evidence: evidence,
            store: store,
            timeout: attestationTimeout
        )
        if let warning = attestor.startupWarning {
            logger.critical("\(warning)")
        }
        logger.notice("measurement policy", metadata: ["policy": "\(store.state)"])
        let hook: ChannelAttestationHook = { channel, inbound, outbound throws(PeerChannelError) in
            let outcome = try await attestor.attest(channel, inbound: &inbound, outbound: outbound)
            if !outcome.isCompliant {
                logger.critical(
                    "ATTESTATION NOT ENFORCED: admitting a peer whose evidence breaks the policy",
                    metadata: ["peer": "\(outcome.peer)", "violations": "\(outcome.violations)"]
                )
            }
        }
        return (hook, store)
    }

    /// How long a peer has to complete the attestation exchange. Generous:
    /// a rack of many nodes starting at once on few cores is slow to answer.
    static let attestationTimeout = Duration.seconds(20)
}
