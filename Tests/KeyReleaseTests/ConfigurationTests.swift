import Foundation
import Testing

@testable import KMSClient
@testable import KeyRelease
@testable import KeyReleaseServer

@Suite("KMS configuration and peer identity files")
struct ConfigurationTests {
    @Test("defaults")
    func defaults() throws {
        let configuration = try KMSConfiguration(environment: [:])
        #expect(configuration.listenHost == "127.0.0.1")
        #expect(configuration.listenPort == 8080)
        #expect(configuration.challengeTTLSeconds == 300)
        #expect(configuration.maximumPendingChallenges == 8)
        #expect(configuration.keyProvider == .local)
        #expect(configuration.keyNamespacePrefix == "keyrack/storage")
        #expect(configuration.redis == nil)
        #expect(configuration.maximumPendingChallengesTotal == 100_000)
        #expect(configuration.idleTimeoutSeconds == 30)
        #expect(configuration.maximumConnections == 4_096)
    }

    @Test("every variable is read")
    func values() throws {
        let directory = FileManager.default.temporaryDirectory.path
        let configuration = try KMSConfiguration(environment: [
            "LISTEN_ADDR": "0.0.0.0:9000", "CHALLENGE_TTL_SECS": "5", "MAX_PENDING_CHALLENGES": "2",
            "REDIS_URL": "redis://127.0.0.1:7000/1", "KEY_PROVIDER": "dstack", "DSTACK_SOCKET_PATH": "/x.sock",
            "KEY_NAMESPACE_PREFIX": "ns", "COLLATERAL_DIR": directory, "KEY_ROOT_FILE": "/r",
            "MAX_PENDING_CHALLENGES_TOTAL": "77", "IDLE_TIMEOUT_SECS": "9", "MAX_CONNECTIONS": "12",
        ])
        #expect(configuration.maximumPendingChallengesTotal == 77)
        #expect(configuration.idleTimeoutSeconds == 9)
        #expect(configuration.maximumConnections == 12)
        #expect(configuration.listenHost == "0.0.0.0")
        #expect(configuration.listenPort == 9000)
        #expect(configuration.challengeTTLSeconds == 5)
        #expect(configuration.maximumPendingChallenges == 2)
        #expect(configuration.redis?.port == 7000)
        #expect(configuration.redis?.database == 1)
        #expect(configuration.keyProvider == .dstack)
        #expect(configuration.dstackSocketPath == "/x.sock")
        #expect(configuration.keyNamespacePrefix == "ns")
        #expect(configuration.collateralDirectory == directory)
        #expect(configuration.keyRootFile == "/r")
    }

    @Test(
        "a bad value has its code and names its variable",
        arguments: [
            ("LISTEN_ADDR", "8080", KMSConfigurationErrorCode.value), ("LISTEN_ADDR", "h:70000", .value),
            ("CHALLENGE_TTL_SECS", "0", .value), ("CHALLENGE_TTL_SECS", "five", .value),
            ("MAX_PENDING_CHALLENGES", "-1", .value), ("REDIS_URL", "http://x", .value),
            ("KEY_PROVIDER", "vault", .value), ("TRUST_ANCHOR", "/no/such.der", .unreadable),
            ("COLLATERAL_DIR", "/no/such/dir", .unreadable), ("KEY_NAMESPACE_PREFIX", "a/", .value),
            ("PCCS_URL", "ftp://pccs", .value), ("MAX_PENDING_CHALLENGES_TOTAL", "0", .value),
            ("IDLE_TIMEOUT_SECS", "0", .value), ("IDLE_TIMEOUT_SECS", "3601", .value),
            ("MAX_CONNECTIONS", "many", .value),
        ]
    )
    func bad(variable: String, value: String, code: KMSConfigurationErrorCode) {
        let error = #expect(throws: KMSConfigurationError.self) {
            try KMSConfiguration(environment: [variable: value])
        }
        #expect(error?.code == code)
        #expect(error?.reason.hasPrefix("\(variable): ") == true)
    }

    @Test("TLS_CERT without TLS_KEY names the missing one; PCCS_URL excludes COLLATERAL_DIR")
    func combinations() {
        let tls = #expect(throws: KMSConfigurationError.self) {
            try KMSConfiguration(environment: ["TLS_CERT": "/etc/hostname"])
        }
        #expect(tls?.code == .combination)
        #expect(tls?.reason.hasPrefix("TLS_KEY: ") == true)
        let both = #expect(throws: KMSConfigurationError.self) {
            try KMSConfiguration(environment: ["PCCS_URL": "https://pccs", "COLLATERAL_DIR": "/tmp"])
        }
        #expect(both?.code == .combination)
    }

    @Test("an identity file round trips, is 0600, is never overwritten, and a tampered one is refused")
    func identity() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("id-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let identity = PeerIdentity.generate()
        try identity.write(to: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let loaded = try PeerIdentity.read(from: path)
        #expect(loaded.peerId == identity.peerId)
        let signature = try loaded.sign([1, 2, 3])
        #expect(identity.peerId.isValidSignature(signature, for: [1, 2, 3]))
        #expect((#expect(throws: IdentityError.self) { try PeerIdentity.generate().write(to: path) })?.code == .exists)

        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[40] ^= 1
        try FileManager.default.removeItem(atPath: path)
        #expect(FileManager.default.createFile(atPath: path, contents: bytes, attributes: [.posixPermissions: 0o600]))
        #expect((#expect(throws: IdentityError.self) { try PeerIdentity.read(from: path) })?.code == .format)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        #expect((#expect(throws: IdentityError.self) { try PeerIdentity.read(from: path) })?.code == .permissions)
        #expect((#expect(throws: IdentityError.self) { try PeerIdentity.read(from: path + ".absent") })?.code == .io)
    }
}

@Suite("RFC 3339 timestamps")
struct TimestampTests {
    @Test("the hand-written form equals Foundation's ISO 8601 formatter with fractional seconds")
    func matchesFoundation() {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for seconds in [0, 1, 951_782_400.5, 1_750_332_747.123, 1_800_000_000.999, 4_102_444_799.25] as [Double] {
            let date = Date(timeIntervalSince1970: seconds)
            #expect(date.rfc3339 == formatter.string(from: date), "\(seconds)")
        }
    }
}

@Suite("Peer identity printing")
struct PeerIdentityPrintingTests {
    @Test("an identity prints its peer id and never its private key")
    func redacted() throws {
        let identity = PeerIdentity.generate()
        let seedHex = identity.privateKey.rawRepresentation.map { String(format: "%02x", $0) }.joined()
        for text in ["\(identity)", String(reflecting: identity), "\([identity])"] {
            #expect(text.contains(identity.peerId.string))
            #expect(!text.contains(seedHex.prefix(12)))
            #expect(text.contains("redacted"))
        }
    }
}
