import ArgumentParser
import Crypto
import Foundation
import NodeAgent

extension RackCommand {
    struct PolicyCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "policy",
            abstract: "Distribute the nodes' measurement policy, signed; show it; write one for given executables.",
            discussion: """
                A rolling upgrade, one node at a time, with the rack unlocking and rotating \
                throughout:

                  keyrack rack policy print --from policy.json --executable /opt/keyrack/new/keyrack > both.json
                  keyrack rack policy set --file both.json --nodes … --operator DIR
                  (replace the executable and restart each node in turn)
                  keyrack rack policy print --executable /opt/keyrack/new/keyrack > new.json
                  keyrack rack policy set --file new.json --nodes … --operator DIR

                A node refuses a policy that does not admit its own software, so the last step \
                is refused, on every node, until every node runs the new executable.
                """,
            subcommands: [Set.self, Show.self, Print.self]
        )

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Sign a measurement policy and put it in force on every node, without a restart.",
                discussion: """
                    The policy file is the node attestation policy's JSON (the format of a node's \
                    attestation.policy file; relative paths in it are read on each node, relative \
                    to that node's own policy file). The operator identity signs it for the rack \
                    the nodes report, under a version above every version signed before (recorded \
                    in the operator's journal; a version is never signed with two contents).

                    First every node checks it without applying it: the signature must chain to \
                    the operator CA it pins, the rack and the version must be right, it must parse \
                    there, and it must admit that node's own software. Only when every node named \
                    accepts is it applied, on all of them; each node keeps the signed copy beside \
                    its ledger (node-policy.json), uses it at every later start instead of its \
                    policy file, and re-attests its peers against it at once.

                    Exits 0 when every node has the policy in force, 1 otherwise (every node's \
                    answer is printed). Running the command again resumes: nodes that already \
                    have it keep it, the others get the same version.
                    """)
            @OptionGroup var nodes: Nodes
            @Option(help: "The measurement policy to distribute (JSON).") var file: String
            @Flag(help: "Apply on the nodes that accept it even when others refuse it or do not answer.")
            var force = false

            func run() async throws {
                try await reportingAsyncFailures {
                    guard let policy = FileManager.default.contents(atPath: file) else {
                        throw CommandFailure("cannot read the policy file \(file)")
                    }
                    guard let operatorDirectory = nodes.operatorDirectory else {
                        throw CommandFailure(
                            "--operator DIR is required: the policy is signed by the operator (create one with keyrack operator init)"
                        )
                    }
                    var rollout: PolicyRollout
                    do {
                        rollout = try PolicyRollout(
                            sockets: nodes.sockets, operatorDirectory: URL(fileURLWithPath: operatorDirectory)
                        ) { line in print(line) }
                    } catch {
                        throw CommandFailure("--operator \(operatorDirectory): \(error)")
                    }
                    rollout.force = force
                    rollout.timeout = .milliseconds(Int(max(nodes.timeout, 1) * 1000))
                    let report: PolicyRollout.Report
                    do {
                        report = try await rollout.run(policy: policy)
                    } catch {
                        throw CommandFailure("\(error)")
                    }
                    let inForce = report.nodes.filter(\.inForce).count
                    guard report.complete else {
                        throw CommandFailure(
                            "version \(report.version) is in force on \(inForce) of \(report.nodes.count) nodes")
                    }
                    print("done: version \(report.version) in force on all \(report.nodes.count) nodes")
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Per node: the measurement policy in force (file or signed version), its digest and mode.",
                discussion: "Exits 0 when every node answered, 1 otherwise.")
            @OptionGroup var nodes: Nodes
            @Flag(help: "Print JSON: per node its endpoint, platform and policy state (null when it did not answer).")
            var json = false

            func run() async throws {
                let reports = await RackOperator.survey(nodes.sockets, client: try nodes.client())
                if json {
                    struct Row: Encodable {
                        let node: String
                        let platform: String?
                        let policy: NodePolicyState?
                    }
                    let rows = reports.map {
                        Row(node: $0.socket, platform: $0.status?.platform.description, policy: $0.status?.policy)
                    }
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: (try? encoder.encode(rows)) ?? Data(), as: UTF8.self))
                } else {
                    var table = [["node", "source", "version", "sha256", "mode"]]
                    for report in reports {
                        guard let status = report.status else {
                            table.append([report.socket, "unreachable", "-", "-", "-"])
                            continue
                        }
                        let state = status.policy
                        table.append([
                            status.platform.description, state?.source.rawValue ?? "unknown",
                            state?.version.map { "\($0)" } ?? "-", state.map { String($0.digest.prefix(16)) } ?? "-",
                            state?.mode ?? (status.attestationEnforced ? "enforce" : "permissive"),
                        ])
                    }
                    print(Columns.render(table))
                }
                try RackCommand.failIfUnreachable(reports)
            }
        }

        struct Print: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print a measurement policy that admits the given executables (software root of trust).",
                discussion: """
                    Hashes each --executable (SHA-256, the digest a node's measurement log \
                    carries) and prints the policy JSON on standard output. With --from, the \
                    digests are added to that policy's softwareRootOfTrust allowlist and the rest \
                    of it (the tdx section, the mode unless --mode is given) is kept: the way to \
                    admit a new build beside the old one during an upgrade.
                    """)
            @Option(
                parsing: .singleValue,
                help: "An executable to admit (repeat the option for several builds).")
            var executable: [String] = []
            @Option(help: "A policy file to start from (its allowlists are kept).") var from: String?
            @Option(help: "enforce or permissive (default: --from's mode, else enforce).") var mode: String?

            func validate() throws {
                guard !executable.isEmpty || from != nil else {
                    throw ValidationError("name at least one --executable, or --from a policy to print")
                }
                if let mode, !["enforce", "permissive"].contains(mode) {
                    throw ValidationError("--mode must be enforce or permissive")
                }
            }

            func run() async throws {
                try await reportingAsyncFailures {
                    var object: [String: Any] = ["mode": "enforce"]
                    if let from {
                        guard let data = FileManager.default.contents(atPath: from),
                            let parsed = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
                        else {
                            throw CommandFailure("\(from) is not a readable JSON policy")
                        }
                        object = parsed
                    }
                    var software = object["softwareRootOfTrust"] as? [String: Any] ?? [:]
                    var allow = software["allow"] as? [String: Any] ?? [:]
                    var digests = allow["executable"] as? [String] ?? []
                    for path in executable {
                        guard let handle = FileHandle(forReadingAtPath: path) else {
                            throw CommandFailure("cannot read the executable \(path)")
                        }
                        defer { try? handle.close() }
                        var hash = SHA256()
                        while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                            hash.update(data: chunk)
                        }
                        let digest = hash.finalize().map { String(format: "%02x", $0) }.joined()
                        if !digests.contains(digest) { digests.append(digest) }
                    }
                    if !digests.isEmpty {
                        allow["executable"] = digests
                        software["allow"] = allow
                        object["softwareRootOfTrust"] = software
                    }
                    if let mode { object["mode"] = mode }
                    let data = try JSONSerialization.data(
                        withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
                    // The printed policy must be one a node accepts.
                    do {
                        _ = try NodeAttestationPolicy(
                            json: data, relativeTo: from.map { URL(fileURLWithPath: $0).deletingLastPathComponent() })
                    } catch {
                        throw CommandFailure("the resulting policy would not be accepted: \(error)")
                    }
                    print(String(decoding: data, as: UTF8.self))
                }
            }
        }
    }
}

/// A plain text table: columns padded to their widest cell.
enum Columns {
    static func render(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.0.padding(toLength: $0.1, withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}
