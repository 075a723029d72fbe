import Crypto
import Foundation
import KeyrackCore
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import TrustQuorum
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// The operator role: an extended key usage that only operator certificates
/// carry. The manufacturing CA never puts it in a device certificate, a
/// device certificate carrying it is refused as a peer, and an operator
/// certificate (which allows no TLS use) is refused as a device.
public enum OperatorRole {
    /// The OID: a UUID-derived arc (ITU-T X.667, `2.25.<uuid>`) of Keyrack's own.
    public static let oid: ASN1ObjectIdentifier = [
        2, 25, 256_112_933_952_765_016, 199_851_823_054_329_201, 578,
    ]

    /// The operator role as an extended key usage.
    public static let usage = ExtendedKeyUsage.Usage(oid: oid)
}

/// The operator's identity: an Ed25519 key and a certificate with the
/// operator role, issued by the manufacturing CA's intermediate. It signs
/// every reconfiguration ticket and every commit `keyrack rack …` decides
/// (``TrustQuorum/DecisionSigner``) and keeps a journal of what it signed,
/// so that it never signs two different decisions of one kind for one epoch,
/// whatever happens to the command that asked.
///
/// `keyrack operator init --dir D --ca CA_DIR --name NAME` writes, in `D`:
/// `operator.key` (mode 0600), `operator.pem`, `operator-ca.pem` (the
/// intermediate and the root: what nodes pin as `identity.operatorCA`) and,
/// from the first signature on, `journal` (one JSON line per decision).
public final class OperatorIdentity: DecisionSigner, CustomStringConvertible, CustomDebugStringConvertible {
    /// The operator certificate.
    public let certificate: Certificate
    /// The operator's name (the certificate's common name).
    public let name: String
    let certificateDER: [UInt8]
    private let key: Curve25519.Signing.PrivateKey
    private let journalPath: String
    private let journal: Mutex<[JournalKey: String]>

    private struct JournalKey: Hashable {
        let kind: String
        let epoch: UInt64
    }

    private struct JournalEntry: Codable {
        var kind: String
        var epoch: UInt64
        var digest: String
    }

    /// Creates an operator identity in `directory` with a certificate from `ca`.
    @discardableResult
    public static func create(
        in directory: URL, ca: ManufacturingCA, name: String, now: Date = Date()
    ) throws(IdentityFileError) -> OperatorIdentity {
        let keyFile = directory.appendingPathComponent("operator.key")
        guard !FileManager.default.fileExists(atPath: keyFile.path) else {
            throw IdentityFileError(
                .exists, "\(directory.path) already holds an operator key; refusing to overwrite it")
        }
        guard !name.isEmpty, name.utf8.count <= 64, !name.contains(":") else {
            throw IdentityFileError(
                .issue, "the operator name must be 1…64 bytes without ':' (it is not a platform id)")
        }
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let key = Curve25519.Signing.PrivateKey()
            let certificate = try Certificate(
                version: .v3,
                serialNumber: .init(),
                publicKey: .init(key.publicKey),
                notValidBefore: now.addingTimeInterval(-3600),
                notValidAfter: now.addingTimeInterval(5 * 365 * 86400),
                issuer: ca.intermediate.subject,
                subject: try DistinguishedName {
                    OrganizationName("Keyrack")
                    OrganizationalUnitName("operator")
                    CommonName(name)
                },
                signatureAlgorithm: .ed25519,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    Critical(try ExtendedKeyUsage([OperatorRole.usage]))
                },
                issuerPrivateKey: ca.intermediateKey
            )
            try writeSecret(key.rawRepresentation, to: keyFile)
            try (try certificate.serializeAsPEM().pemString + "\n").write(
                to: directory.appendingPathComponent("operator.pem"), atomically: true, encoding: .utf8)
            let bundle = try ca.intermediate.serializeAsPEM().pemString + "\n" + ca.root.serializeAsPEM().pemString
            try (bundle + "\n").write(
                to: directory.appendingPathComponent("operator-ca.pem"), atomically: true, encoding: .utf8)
        } catch let error as IdentityFileError {
            throw error
        } catch {
            throw IdentityFileError(.io, "cannot create the operator identity in \(directory.path): \(error)")
        }
        return try OperatorIdentity(directory: directory)
    }

    /// Opens the operator identity in `directory` and its journal.
    public init(directory: URL) throws(IdentityFileError) {
        do {
            certificate = try Certificate(
                pemEncoded: String(contentsOf: directory.appendingPathComponent("operator.pem"), encoding: .utf8))
        } catch {
            throw IdentityFileError(
                .format, "\(directory.path) holds no operator certificate (made by `keyrack operator init`)")
        }
        let raw = try readSecret(directory.appendingPathComponent("operator.key"))
        guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw),
            certificate.publicKey == Certificate.PublicKey(key.publicKey)
        else {
            throw IdentityFileError(.format, "\(directory.path): operator.key is not the key of operator.pem")
        }
        self.key = key
        var serializer = DER.Serializer()
        do {
            try serializer.serialize(certificate)
        } catch {
            throw IdentityFileError(.format, "the operator certificate does not encode")
        }
        certificateDER = serializer.serializedBytes
        let names = certificate.subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }
        name = names.first.flatMap { String($0.value) } ?? "operator"
        journalPath = directory.appendingPathComponent("journal").path
        journal = Mutex(try Self.loadJournal(journalPath))
    }

    /// The highest epoch the journal holds a decision for (`nil`: nothing signed yet).
    public var highestSignedEpoch: Epoch? {
        journal.withLock { $0.keys.filter { !$0.kind.hasPrefix(Self.policyKind) }.map(\.epoch).max() }
            .map { Epoch($0) }
    }

    /// The journal's kind for the measurement policies of a rack: versions are per rack.
    private static let policyKind = "policy:"

    /// The highest measurement-policy version signed for `rackId` (`nil`: none).
    public func highestSignedPolicyVersion(rackId: RackId) -> UInt64? {
        let kind = Self.policyKind + rackId.description
        return journal.withLock { $0.keys.filter { $0.kind == kind }.map(\.epoch).max() }
    }

    /// Whether the journal holds version `version` of `rackId`'s policy signed with exactly `policy`.
    public func hasSigned(policy: Data, rackId: RackId, version: UInt64) -> Bool {
        let statement = SignedNodePolicy.statement(rackId: rackId, version: version, policy: policy)
        let digest = Array(SHA256.hash(data: statement)).hexString
        return journal.withLock { $0[JournalKey(kind: Self.policyKind + rackId.description, epoch: version)] } == digest
    }

    /// Signs `policy` as version `version` of `rackId`'s measurement policy.
    /// The journal records it first: a version is never signed twice with
    /// different contents (``SigningError/Code/conflicting``).
    public func sign(policy: Data, rackId: RackId, version: UInt64) throws(SigningError) -> SignedNodePolicy {
        let statement = SignedNodePolicy.statement(rackId: rackId, version: version, policy: policy)
        let signature = try sign(
            statement: statement, kind: Self.policyKind + rackId.description, epoch: version)
        return SignedNodePolicy(rackId: rackId, version: version, policy: policy, signature: signature)
    }

    /// Reads the journal. A last line cut short by a crash (no newline) was
    /// never acknowledged (its signature was never returned) and is dropped;
    /// any other unreadable line is an error (the journal is not guessed at).
    private static func loadJournal(_ path: String) throws(IdentityFileError) -> [JournalKey: String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        var text = String(decoding: data, as: UTF8.self)
        if !text.isEmpty, !text.hasSuffix("\n") {
            let kept = text.lastIndex(of: "\n").map { text[...$0] } ?? ""
            text = String(kept)
            guard truncate(path, off_t(kept.utf8.count)) == 0 else {
                throw IdentityFileError(.io, "cannot drop the unfinished last line of \(path)")
            }
        }
        var entries: [JournalKey: String] = [:]
        for (number, line) in text.split(separator: "\n").enumerated() {
            guard let entry = try? JSONDecoder().decode(JournalEntry.self, from: Data(line.utf8)) else {
                throw IdentityFileError(.format, "\(path) line \(number + 1) is not a journal entry: refusing to sign")
            }
            let key = JournalKey(kind: entry.kind, epoch: entry.epoch)
            if let earlier = entries[key], earlier != entry.digest {
                throw IdentityFileError(
                    .format, "\(path) holds two different \(entry.kind)s for epoch \(entry.epoch): refusing to sign")
            }
            entries[key] = entry.digest
        }
        return entries
    }

    public func sign(_ decision: Decision) throws(SigningError) -> OperatorSignature {
        try sign(statement: decision.statement, kind: decision.kindName, epoch: decision.epoch.value)
    }

    /// Journals `(kind, epoch)` with the statement's digest (refusing a
    /// different one already there), then signs the statement.
    private func sign(statement: [UInt8], kind: String, epoch: UInt64) throws(SigningError) -> OperatorSignature {
        let digest = Array(SHA256.hash(data: statement)).hexString
        let key = JournalKey(kind: kind, epoch: epoch)
        try journal.withLock { (entries: inout [JournalKey: String]) throws(SigningError) in
            if let earlier = entries[key] {
                guard earlier == digest else {
                    throw SigningError(
                        code: .conflicting,
                        reason:
                            "the journal \(journalPath) holds a different \(key.kind) for \(key.kind.hasPrefix(Self.policyKind) ? "version" : "epoch") \(key.epoch): the operator never signs two"
                    )
                }
                return
            }
            try Self.append(JournalEntry(kind: key.kind, epoch: key.epoch, digest: digest), to: journalPath)
            entries[key] = digest
        }
        guard let signature = try? self.key.signature(for: statement),
            let value = OperatorSignature(credential: certificateDER, signature: Array(signature))
        else {
            throw SigningError(code: .unavailable, reason: "Ed25519 signing failed")
        }
        return value
    }

    /// Appends one line and fsyncs it before anything is signed.
    private static func append(_ entry: JournalEntry, to path: String) throws(SigningError) {
        guard let encoded = try? JSONEncoder().encode(entry) else {
            throw SigningError(code: .unavailable, reason: "cannot encode a journal entry")
        }
        let line = Array(encoded) + [0x0A]
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw SigningError(code: .unavailable, reason: "cannot open the journal \(path): errno \(errno)")
        }
        defer { close(descriptor) }
        let written = line.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == line.count, fsync(descriptor) == 0 else {
            throw SigningError(code: .unavailable, reason: "cannot write the journal \(path): nothing was signed")
        }
    }

    /// The operator key as TLS sees it, for the admin API over the network
    /// (``AdminCredentials``): BoringSSL asks it for each handshake's
    /// CertificateVerify signature and never holds the key. TLS 1.3 signs
    /// its own context string ahead of the transcript, so no handshake
    /// signature reads as a decision statement.
    var tlsKey: NIOSSLPrivateKey { NIOSSLPrivateKey(customPrivateKey: OperatorTLSKey(key: key)) }

    public var description: String { "OperatorIdentity(\(name), key redacted)" }
    public var debugDescription: String { description }
}

/// Judges operator signatures against the operator CA a node pins: the
/// signature's credential must be an operator certificate (the operator
/// role, not a CA, no TLS use) issued by the pinned intermediate, valid now,
/// with an Ed25519 key that made the signature. The chain is exactly
/// certificate → pinned intermediate → pinned root (the intermediate was
/// checked against the root when the verifier was made), so nothing a peer
/// sends is searched. Verified certificates are remembered (at most
/// ``cacheLimit``) so a stream of messages costs one signature check each.
public final class OperatorCertificateVerifier: DecisionVerifier {
    /// The pinned intermediate.
    public let intermediate: Certificate
    /// The pinned root.
    public let root: Certificate
    /// How many verified operator certificates are remembered.
    public static let cacheLimit = 16
    private let clock: @Sendable () -> Date
    private let cache = Mutex<[[UInt8]: (key: Curve25519.Signing.PublicKey, notAfter: Date)]>([:])

    /// A verifier pinning `intermediate` (which must be a CA certificate
    /// signed by `root`) and `root`.
    public init(
        intermediate: Certificate, root: Certificate, clock: @escaping @Sendable () -> Date = { Date() }
    ) throws(IdentityFileError) {
        guard intermediate.issuer == root.subject,
            root.publicKey.isValidSignature(intermediate.signature, for: intermediate),
            let constraints = try? intermediate.extensions.basicConstraints,
            case .isCertificateAuthority = constraints
        else {
            throw IdentityFileError(
                .unverified, "the operator CA's intermediate is not a CA certificate signed by its root")
        }
        self.intermediate = intermediate
        self.root = root
        self.clock = clock
    }

    /// A verifier from `operator-ca.pem`: the intermediate, then the root.
    public convenience init(bundle path: String) throws(IdentityFileError) {
        let certificates: [Certificate]
        do {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            certificates = try PEMDocument.parseMultiple(pemString: text).map { try Certificate(pemDocument: $0) }
        } catch {
            throw IdentityFileError(.format, "cannot read the operator CA at \(path) (PEM: intermediate, then root)")
        }
        guard certificates.count == 2 else {
            throw IdentityFileError(
                .format,
                "\(path) holds \(certificates.count) certificates: the operator CA is its intermediate and root")
        }
        try self.init(intermediate: certificates[0], root: certificates[1])
    }

    public func verifies(_ signature: OperatorSignature, over statement: [UInt8]) -> Bool {
        let now = clock()
        if let cached = cache.withLock({ $0[signature.credential] }), now <= cached.notAfter {
            return cached.key.isValidSignature(signature.signature, for: statement)
        }
        guard let (key, notAfter) = operatorKey(signature.credential, now: now) else { return false }
        guard key.isValidSignature(signature.signature, for: statement) else { return false }
        cache.withLock { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll() }
            cache[signature.credential] = (key, notAfter)
        }
        return true
    }

    /// The Ed25519 key of `der` if it is an operator certificate issued by
    /// the pinned intermediate and valid at `now`, with when it expires.
    func operatorKey(_ der: [UInt8], now: Date) -> (Curve25519.Signing.PublicKey, Date)? {
        guard let certificate = try? Certificate(derEncoded: der),
            certificate.issuer == intermediate.subject,
            intermediate.publicKey.isValidSignature(certificate.signature, for: certificate),
            certificate.notValidBefore <= now, now <= certificate.notValidAfter,
            intermediate.notValidBefore <= now, now <= intermediate.notValidAfter,
            root.notValidBefore <= now, now <= root.notValidAfter,
            Self.isOperatorCertificate(certificate),
            let key = Curve25519.Signing.PublicKey(certificate.publicKey)
        else { return nil }
        return (key, min(certificate.notValidAfter, intermediate.notValidAfter, root.notValidAfter))
    }

    /// The name (common name) of `der` if it is an operator certificate
    /// issued by the pinned intermediate and valid now: who a network admin
    /// connection's client certificate says it is.
    public func operatorName(_ der: [UInt8]) -> String? {
        guard operatorKey(der, now: clock()) != nil, let certificate = try? Certificate(derEncoded: der) else {
            return nil
        }
        let names = certificate.subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }
        return names.first.flatMap { String($0.value) } ?? "operator"
    }

    /// Not a CA, signs, has the operator role, and allows no TLS use
    /// (it authenticates to the admin API by the operator role, which this
    /// verifier checks, not by a TLS key usage).
    static func isOperatorCertificate(_ certificate: Certificate) -> Bool {
        guard let extended = try? certificate.extensions.extendedKeyUsage, extended.contains(OperatorRole.usage),
            !extended.contains(.serverAuth), !extended.contains(.clientAuth),
            let usage = try? certificate.extensions.keyUsage, usage.digitalSignature, !usage.keyCertSign
        else { return false }
        if let constraints = try? certificate.extensions.basicConstraints, case .isCertificateAuthority = constraints {
            return false
        }
        return true
    }
}

/// The operator's Ed25519 key as a BoringSSL custom key: TLS 1.3 only,
/// Ed25519 only, never decrypts.
struct OperatorTLSKey: NIOSSLCustomPrivateKey, Hashable {
    let key: Curve25519.Signing.PrivateKey

    var signatureAlgorithms: [SignatureAlgorithm] { [.ed25519] }

    func sign(channel: any Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard algorithm == .ed25519 else {
            return channel.eventLoop.makeFailedFuture(
                AdminError(.authentication, "TLS asked the operator key for a scheme other than Ed25519"))
        }
        do {
            return channel.eventLoop.makeSucceededFuture(
                ByteBuffer(bytes: try key.signature(for: Array(data.readableBytesView))))
        } catch {
            return channel.eventLoop.makeFailedFuture(AdminError(.authentication, "Ed25519 signing failed"))
        }
    }

    func decrypt(channel: any Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(AdminError(.authentication, "the operator key does not decrypt"))
    }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.key.publicKey.rawRepresentation == rhs.key.publicKey.rawRepresentation
    }
    func hash(into hasher: inout Hasher) { hasher.combine(key.publicKey.rawRepresentation) }
}
