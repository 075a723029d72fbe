import ArgumentParser
import Foundation
import NodeAgent
import TrustQuorum
import X509

struct CACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "The manufacturing certificate authority that issues device certificates.",
        subcommands: [Init.self, Sign.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a root and an intermediate CA in DIR (root.pem, intermediate.pem, keys mode 0600)."
        )
        @Option(help: "Where to create the CA; an existing CA is never overwritten.") var dir: String

        func run() throws {
            try reportingFailures {
                let ca = try ManufacturingCA.create(in: URL(fileURLWithPath: dir))
                try writeStandardOutput("created the manufacturing CA in \(dir): \(ca.root.subject)\n")
            }
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a device CSR (signature, platform id) and issue its certificate (PEM)."
        )
        @Option(help: "The CA directory (keyrack ca init).") var dir: String
        @Option(help: "The device's CSR (PEM, from keyrack device init).") var csr: String
        @Option(help: "Where to write the certificate (default: standard output).") var out: String?

        func run() throws {
            try reportingFailures {
                let ca = try ManufacturingCA(directory: URL(fileURLWithPath: dir))
                let request: CertificateSigningRequest
                do {
                    request = try CertificateSigningRequest(pemEncoded: String(contentsOfFile: csr, encoding: .utf8))
                } catch {
                    throw CommandFailure("\(csr) is not a PEM certificate signing request")
                }
                let pem = try ca.sign(request).serializeAsPEM().pemString + "\n"
                if let out {
                    try pem.write(toFile: out, atomically: true, encoding: .utf8)
                } else {
                    try writeStandardOutput(pem)
                }
            }
        }
    }
}

struct OperatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator",
        abstract: "The operator identity that signs every reconfiguration ticket and commit.",
        subcommands: [Init.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an operator key and certificate (operator role) issued by the CA in --ca.",
            discussion: """
                Writes, in DIR: operator.key (mode 0600), operator.pem (the certificate: the \
                operator role, no TLS use, so it can never act as a node), and operator-ca.pem \
                (the CA's intermediate and root). Every node pins operator-ca.pem as \
                identity.operatorCA in its configuration; `keyrack rack … --operator DIR` signs with \
                the key and keeps DIR/journal, the record of every decision it signed.
                """
        )
        @Option(help: "Where to create the operator identity; an existing one is never overwritten.") var dir: String
        @Option(help: "The manufacturing CA directory (keyrack ca init) that issues the certificate.") var ca: String
        @Option(help: "The operator's name (the certificate's common name).") var name: String

        func run() throws {
            try reportingFailures {
                let authority = try ManufacturingCA(directory: URL(fileURLWithPath: ca))
                let identity = try OperatorIdentity.create(in: URL(fileURLWithPath: dir), ca: authority, name: name)
                try writeStandardOutput(
                    "created the operator identity '\(identity.name)' in \(dir); nodes pin \(dir)/operator-ca.pem\n")
            }
        }
    }
}

struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "A node's software root of trust and device identity.",
        subcommands: [Init.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the device key (mode 0600, never exported) and a CSR binding the platform id.",
            discussion: "Writes DIR/device.key and DIR/device.csr.pem; have the CA sign the CSR with `keyrack ca sign`."
        )
        @Option(help: "Where to create the device identity.") var dir: String
        @Option(help: "The platform's part number.") var part: String
        @Option(help: "The platform's serial number.") var serial: String
        @Option(help: "ed25519 (default) or rsa4096.") var keyType = "ed25519"

        func run() throws {
            try reportingFailures {
                guard let type = DeviceKeyType(rawValue: keyType) else {
                    throw CommandFailure("--key-type must be ed25519 or rsa4096")
                }
                guard !part.isEmpty, !serial.isEmpty, !part.contains(":") else {
                    throw CommandFailure("--part and --serial must be non-empty and --part may not contain ':'")
                }
                _ = try DeviceIdentity.initialize(
                    directory: URL(fileURLWithPath: dir),
                    platform: PlatformId(part: part, serial: serial),
                    keyType: type
                )
                try writeStandardOutput("created \(dir)/device.key and \(dir)/device.csr.pem for \(part):\(serial)\n")
            }
        }
    }
}
