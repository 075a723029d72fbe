import Foundation
import Testing
import TrustQuorum

@testable import NodeAgent

/// The node configuration file and the admin API's value types.
@Suite("Node configuration")
struct NodeConfigurationTests {
    static let base = URL(fileURLWithPath: "/etc/keyrack")

    static func valid() -> [String: Any] {
        [
            "platform": "kr-1000:sn-0001",
            "rackId": "00112233445566778899aabbccddeeff",
            "identity": [
                "key": "device.key", "certificate": "device.pem", "intermediate": "i.pem", "root": "r.pem",
                "operatorCA": "operator-ca.pem", "deniedSerials": ["00:1A:2b", "0"],
            ],
            "listen": "127.0.0.1:7001",
            "peers": ["kr-1000:sn-0002": "[::1]:7002"],
            "ledger": ["a", "/var/lib/keyrack/b"],
            "admin": "admin.sock",
            "attestation": ["policy": "policy.json", "evidence": "software-tee:tee"],
            "disks": ["data0"],
        ]
    }

    static func parse(_ object: [String: Any]) throws(NodeConfigurationError) -> NodeConfiguration {
        let data = try! JSONSerialization.data(withJSONObject: object)
        return try NodeConfiguration(json: data, relativeTo: base)
    }

    @Test("a valid file: relative paths resolved against its directory, IPv6 peers, evidence directory")
    func valid() throws {
        let configuration = try Self.parse(Self.valid())
        #expect(configuration.platform == PlatformId(part: "kr-1000", serial: "sn-0001"))
        #expect(configuration.deviceKey == "/etc/keyrack/device.key")
        #expect(configuration.ledger == ["/etc/keyrack/a", "/var/lib/keyrack/b"])
        #expect(
            configuration.peers[PlatformId(part: "kr-1000", serial: "sn-0002")] == PeerAddress(host: "::1", port: 7002))
        #expect(configuration.evidence == "software-tee:/etc/keyrack/tee")
        #expect(configuration.operatorCA == "/etc/keyrack/operator-ca.pem")
        #expect(configuration.deniedSerials == ["1a2b", "0"])
        #expect(NodeConfiguration.serialText([0x00, 0x1A, 0x2B]) == "1a2b")
        // What it writes reads back the same.
        #expect(try NodeConfiguration(json: configuration.json(), relativeTo: Self.base) == configuration)
    }

    @Test(
        "a broken file is refused, naming the field",
        arguments: [
            ("platform", #""no-colon""#, "is not a platform id", .invalid),
            ("platform", #"":serial""#, "is not a platform id", .invalid),
            ("rackId", #""0011""#, "rackId must be 16 bytes", .invalid),
            ("listen", #""127.0.0.1""#, "is not host:port", .invalid),
            ("listen", #""127.0.0.1:70000""#, "is not host:port", .invalid),
            ("listen", #"":7001""#, "has no host", .invalid),
            ("ledger", #"["a"]"#, "two different directories", .invalid),
            ("ledger", #"["a", "a"]"#, "two different directories", .invalid),
            ("ledger", #""a""#, "'ledger' must be a list of strings", .invalid),
            ("disks", #"["d", "d"]"#, "disks must be distinct", .invalid),
            ("peers", #"{"x:y": 7}"#, #"peers.x:y must be a "host:port" string"#, .invalid),
            ("identity", #"{"key": "k"}"#, "'identity.certificate' is missing", .missing),
            (
                "identity", #"{"key": "k", "certificate": "c", "intermediate": "i", "root": "r"}"#,
                "'identity.operatorCA' is missing", .missing
            ),
            (
                "identity",
                #"{"key": "k", "certificate": "c", "intermediate": "i", "root": "r", "operatorCA": "o", "deniedSerials": ["xyz"]}"#,
                "is not a serial number in hex", .invalid
            ),
            (
                "identity",
                #"{"key": "k", "certificate": "c", "intermediate": "i", "root": "r", "operatorCA": "o", "deniedSerials": "ab"}"#,
                "must be a list of hex serial numbers", .invalid
            ),
            ("attestation", #"{"policy": "p", "evidence": "sgx"}"#, "attestation.evidence must be", .invalid),
            ("colour", #""blue""#, "unknown field 'colour'", .unknownField),
            ("disks", #"[{"id": "d", "luks": "/dev/x"}]"#, "disks[0].mapper is needed to open the volume", .missing),
            (
                "disks", #"[{"id": "d", "luks": "/dev/x", "open": "no"}]"#, "disks[0].open must be true or false",
                .invalid
            ),
            ("disks", #"[{"id": "d", "luks": "/dev/x", "mapper": "a/b"}]"#, "disks[0].mapper must be", .invalid),
            ("disks", #"[{"id": "d", "mapper": "m"}]"#, "'disks[0].luks' is missing", .missing),
            (
                "disks", #"[{"id": "d", "luks": "/dev/x", "mapper": "m", "size": 1}]"#, "unknown field 'disks[0].size'",
                .unknownField
            ),
            ("disks", #"["d", {"id": "d", "luks": "/dev/x", "mapper": "m"}]"#, "disks must be distinct", .invalid),
            (
                "disks",
                #"[{"id": "a", "luks": "/dev/x", "mapper": "m"}, {"id": "b", "luks": "/dev/y", "mapper": "m"}]"#,
                "the same device or mapper",
                .invalid
            ),
            ("disks", "[7]", "disks[0] must be a disk id or an object", .invalid),
        ] as [(String, String, String, NodeConfigurationErrorCode)]
    )
    func broken(field: String, json: String, expected: String, code: NodeConfigurationErrorCode) throws {
        var object = Self.valid()
        object[field] = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let error = #expect(throws: NodeConfigurationError.self) { try Self.parse(object) }
        #expect(error?.code == code)
        // The reason names the field and what is wrong with it.
        #expect(error?.reason.contains(expected) == true, "\(String(describing: error))")
    }

    @Test("disks: plain ids and LUKS2 volumes side by side, relative device paths resolved; written back the same")
    func luksVolumes() throws {
        var object = Self.valid()
        object["disks"] = [
            "data0", ["id": "data1", "luks": "images/data1.img", "mapper": "data1"],
            ["id": "data2", "luks": "/dev/sdb", "open": false],
        ]
        let configuration = try Self.parse(object)
        #expect(configuration.disks == ["data0", "data1", "data2"])
        #expect(
            configuration.volumes == [
                LuksVolume(disk: "data1", device: "/etc/keyrack/images/data1.img", mapper: "data1", open: true),
                LuksVolume(disk: "data2", device: "/dev/sdb", mapper: nil, open: false),
            ])
        #expect(try NodeConfiguration(json: configuration.json(), relativeTo: Self.base) == configuration)
    }

    @Test("an agent state written before re-key plans existed still loads")
    func olderAgentState() throws {
        let old = #"{"alarms": ["x"], "disks": {"data0": 2}, "generation": 4, "peers": {}}"#
        let state = try JSONDecoder().decode(AgentState.self, from: Data(old.utf8))
        #expect(state.generation == 4)
        #expect(state.disks == ["data0": 2])
        #expect(state.alarms == ["x"])
        #expect(state.rekeys.isEmpty)
    }

    @Test("an admin request never prints the existing key of a luks-bind")
    func requestRedacted() {
        let request = AdminRequest(.luksBind, disk: "data0", existingKey: "c2VjcmV0LXBhc3NwaHJhc2U=")
        #expect(!"\(request)".contains("c2VjcmV0"))
        #expect(!String(reflecting: request).contains("c2VjcmV0"))
        #expect("\(request)".contains("redacted"))
    }

    @Test("not JSON, or not an object, or a missing field")
    func notAnObject() {
        let notJSON = #expect(throws: NodeConfigurationError.self) {
            try NodeConfiguration(json: Data("{".utf8), relativeTo: Self.base)
        }
        #expect(notJSON?.code == .syntax)
        #expect(notJSON?.reason == "the node configuration is not valid JSON")
        let notObject = #expect(throws: NodeConfigurationError.self) {
            try NodeConfiguration(json: Data("[]".utf8), relativeTo: Self.base)
        }
        #expect(notObject?.code == .syntax)
        #expect(notObject?.reason == "the node configuration must be a JSON object")
        var object = Self.valid()
        object["admin"] = nil
        let missing = #expect(throws: NodeConfigurationError.self) { try Self.parse(object) }
        #expect(missing?.code == .missing)
        #expect(missing?.reason == "'admin' is missing")
        let unreadable = #expect(throws: NodeConfigurationError.self) {
            try NodeConfiguration(contentsOf: "/nonexistent/node.json")
        }
        #expect(unreadable?.code == .unreadable)
    }

    @Test("platform ids parse from part:serial and nothing else")
    func platformIds() {
        #expect(PlatformId(parsing: "913:SN1") == PlatformId(part: "913", serial: "SN1"))
        #expect(PlatformId(parsing: "913:SN:1") == PlatformId(part: "913", serial: "SN:1"))
        for text in ["", "913", ":SN1", "913:"] { #expect(PlatformId(parsing: text) == nil, "\(text)") }
    }

    @Test("an admin response never prints a disk key")
    func responseRedacted() {
        let key = String(repeating: "ab", count: 32)
        let response = AdminResponse(key: key, keyEpoch: Epoch(3))
        #expect(!"\(response)".contains(key))
        #expect(!String(reflecting: response).contains(key))
        #expect("\(response)".contains("redacted"))
        #expect(!"\(AdminResponse(key: key))".contains(key))
    }
}
