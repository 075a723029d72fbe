import Crypto
import Foundation
import KeyrackCore

/// A TEE in software for machines without TDX: it keeps a test PKI shaped
/// like Intel's in a directory and issues quotes in the real v4 and v5 byte
/// formats (TD 1.0, TD 1.5 and TD 1.5 "ex" bodies, any TD attributes and
/// TDX module fields) over any report data and measurements, with a real QE
/// report and signatures, plus the matching collateral (any platform,
/// module and QE TCB levels; see ``TestPlatformOptions``).
///
/// Nothing in ``QuoteVerifier`` knows about it: its quotes verify only under
/// its own root as the trust anchor.
///
/// The directory holds `root.der` (the trust anchor), `collateral.json` (in
/// the dcap-qvl format, like the shared test data) and `tee.json` (mode
/// 0600: the PCK and attestation private keys, the PCK chain and the default
/// measurements; the CA private keys are not kept).
public struct SoftwareTEE: Sendable {
    /// The directory.
    public let directory: URL
    /// The trust anchor under which its quotes verify.
    public let trustAnchor: TrustAnchor
    /// The collateral for its platform.
    public let collateral: Collateral
    /// Measurements used when a quote does not name them.
    public let defaultMeasurements: TDMeasurements
    private let pck: P256.Signing.PrivateKey
    private let attestation: P256.Signing.PrivateKey
    private let pckChainPEM: String
    /// The QE report, its signature, auth data and chain: fixed per TEE, made once.
    private let certification: [UInt8]
    /// The attestation public key's raw encoding, made once.
    private let attestationPublicKey: [UInt8]

    /// The default measurements: fixed values, SHA-384 of a label each.
    public static let fixedMeasurements = TDMeasurements(
        mrTD: Array(SHA384.hash(data: Array("keyrack software TEE MRTD".utf8))),
        rtmrs: (0..<4).map { Array(SHA384.hash(data: Array("keyrack software TEE RTMR\($0)".utf8))) })

    /// Creates the test PKI and collateral at `now` (Unix seconds) and writes
    /// them into `directory` (created if needed; existing files are replaced).
    @discardableResult
    public static func initialize(
        directory: URL, options: TestPlatformOptions = .init(), now: Int64, keys: TestPKIKeys = .init()
    ) throws -> SoftwareTEE {
        let pki = try TestPKI(keys: keys, options: options, now: now)
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data(try TestPKI.der(pki.root)).write(to: directory.appendingPathComponent("root.der"))
        try pki.collateral.jsonData().write(to: directory.appendingPathComponent("collateral.json"))
        let state: [String: Any] = [
            "format": "keyrack-software-tee/1",
            "issuedAt": now,
            "options": [
                "tcbStatus": options.tcbStatus.rawValue, "revokedPCK": options.revokedPCK,
                "expiredCollateral": options.expiredCollateral, "tcbLevels": options.tcbLevels ?? NSNull(),
                "issuedAgo": options.issuedAgo, "collateralValidFor": options.collateralValidFor,
                "crlValidFor": options.crlValidFor, "crlIssuedAgo": options.crlIssuedAgo ?? NSNull(),
            ],
            "pckKey": keys.pck.rawRepresentation.hexString,
            "attestationKey": keys.attestation.rawRepresentation.hexString,
            "pckChain": try pki.pckChainPEM(),
            "mrtd": fixedMeasurements.mrTD.hexString,
            "rtmrs": fixedMeasurements.rtmrs.map(\.hexString),
        ]
        let stateURL = directory.appendingPathComponent("tee.json")
        let data = try JSONSerialization.data(withJSONObject: state, options: [.sortedKeys, .prettyPrinted])
        _ = fm.createFile(atPath: stateURL.path, contents: nil, attributes: [.posixPermissions: 0o600])
        try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: stateURL.path)
        try data.write(to: stateURL)
        return try SoftwareTEE(directory: directory)
    }

    /// Opens a software TEE created by ``initialize(directory:options:now:keys:)``.
    public init(directory: URL) throws {
        func read(_ name: String) throws -> Data {
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) else {
                throw SoftwareTEEError(
                    .missing, "\(directory.path)/\(name) is missing: run `keyrack tee init --dir \(directory.path)`")
            }
            return data
        }
        let object = try JSONSerialization.jsonObject(with: try read("tee.json"))
        guard let state = object as? [String: Any], state["format"] as? String == "keyrack-software-tee/1",
            let pckHex = state["pckKey"] as? String, let pckRaw = [UInt8](hex: pckHex),
            let akHex = state["attestationKey"] as? String, let akRaw = [UInt8](hex: akHex),
            let chain = state["pckChain"] as? String, let mrtdHex = state["mrtd"] as? String,
            let mrtd = [UInt8](hex: mrtdHex), let rtmrHex = state["rtmrs"] as? [String]
        else {
            throw SoftwareTEEError(.state, "\(directory.path)/tee.json is not a keyrack software TEE state file")
        }
        let rtmrs = rtmrHex.compactMap { [UInt8](hex: $0) }
        guard rtmrs.count == 4 else { throw SoftwareTEEError(.state, "tee.json: rtmrs must be four hex values") }
        self.directory = directory
        self.pck = try P256.Signing.PrivateKey(rawRepresentation: pckRaw)
        self.attestation = try P256.Signing.PrivateKey(rawRepresentation: akRaw)
        self.pckChainPEM = chain
        self.defaultMeasurements = TDMeasurements(mrTD: mrtd, rtmrs: rtmrs)
        self.trustAnchor = try TrustAnchor(bytes: [UInt8](try read("root.der")))
        self.collateral = try Collateral(json: try read("collateral.json"))
        self.attestationPublicKey = Array(attestation.publicKey.rawRepresentation)
        self.certification = try QuoteWriter.certificationData(
            keys: TestPKIKeys(root: pck, pckCA: pck, pck: pck, tcbSigning: pck, attestation: attestation),
            pckChainPEM: chain
        )
    }

    /// A quote over `reportData` (64 bytes) with the given measurements (the
    /// defaults where `nil`) in `shape` (a v4 quote of a healthy TD by
    /// default); `debug` also sets TDATTRIBUTES.DEBUG.
    public func quote(
        reportData: [UInt8], mrTD: [UInt8]? = nil, rtmrs: [[UInt8]?] = [nil, nil, nil, nil], debug: Bool = false,
        shape: QuoteShape = QuoteShape()
    ) throws(AttestationError) -> [UInt8] {
        var measurements = defaultMeasurements
        if let mrTD { measurements.mrTD = mrTD }
        for (index, rtmr) in rtmrs.enumerated() where index < 4 {
            if let rtmr { measurements.rtmrs[index] = rtmr }
        }
        let keys = TestPKIKeys(root: pck, pckCA: pck, pck: pck, tcbSigning: pck, attestation: attestation)
        return try QuoteWriter.quote(
            keys: keys, pckChainPEM: pckChainPEM, reportData: reportData, measurements: measurements, debug: debug,
            shape: shape, certification: certification, attestationKey: attestationPublicKey)
    }
}

/// A software TEE directory problem.
public typealias SoftwareTEEError = CodedError<SoftwareTEEErrorCode>

/// The codes of ``SoftwareTEEError``.
public struct SoftwareTEEErrorCode: ErrorCodes {
    public let rawValue: String
    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// A file of the directory is missing: it was never made with `keyrack tee init`.
    public static let missing = SoftwareTEEErrorCode("ATTEST-TEE-MISSING")
    /// `tee.json` is not a keyrack software TEE state file.
    public static let state = SoftwareTEEErrorCode("ATTEST-TEE-STATE")
    /// The TCB levels description (`keyrack tee init --tcb-levels`) cannot be used.
    public static let tcbLevels = SoftwareTEEErrorCode("ATTEST-TEE-TCB-LEVELS")
}

extension SoftwareTEE: CustomStringConvertible {
    /// The directory only: the keys are never printed.
    public var description: String { "SoftwareTEE(\(directory.path))" }
}
