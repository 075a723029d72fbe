// swift-tools-version: 6.1
import PackageDescription

import class Foundation.ProcessInfo

/// Keyrack: trust-quorum unlock for racks of machines and attested key release.
///
/// Module layout follows `shared/spec/ARCHITECTURE.md`. The benchmark target
/// (ordo-one/benchmark) is only part of the package when `ENABLE_BENCHMARKS`
/// is set, so ordinary builds and CI stay fast.
let enableBenchmarks = ProcessInfo.processInfo.environment["ENABLE_BENCHMARKS"] != nil

var dependencies: [Package.Dependency] = [
    .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
]

var targets: [Target] = [
    .target(name: "CKeyrackSystem"),
    .target(
        name: "SecretSharing",
        dependencies: [
            "CKeyrackSystem",
            .product(name: "Crypto", package: "swift-crypto"),
        ]
    ),
    .target(
        name: "TrustQuorum",
        dependencies: [
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
        ]
    ),
    .target(
        name: "Simulation",
        dependencies: [
            "TrustQuorum",
            "SecretSharing",
        ]
    ),
    .executableTarget(
        name: "keyrack",
        dependencies: [
            "SecretSharing",
            "TrustQuorum",
            "Simulation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]
    ),
    .testTarget(
        name: "SecretSharingTests",
        dependencies: [
            "SecretSharing",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]
    ),
    .testTarget(
        name: "TrustQuorumTests",
        dependencies: [
            "TrustQuorum",
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]
    ),
    .testTarget(
        name: "SimulationTests",
        dependencies: [
            "Simulation",
            "TrustQuorum",
            "SecretSharing",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]
    ),
    .testTarget(
        name: "KeyrackCLITests",
        dependencies: [
            "keyrack",
            "SecretSharing",
        ]
    ),
]

if enableBenchmarks {
    dependencies.append(
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"])
    )
    targets.append(
        .executableTarget(
            name: "SecretSharingBenchmarks",
            dependencies: [
                "SecretSharing",
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/SecretSharingBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        )
    )
}

let package = Package(
    name: "keyrack",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyrack", targets: ["keyrack"]),
        .library(name: "SecretSharing", targets: ["SecretSharing"]),
        .library(name: "TrustQuorum", targets: ["TrustQuorum"]),
        .library(name: "Simulation", targets: ["Simulation"]),
    ],
    dependencies: dependencies,
    targets: targets,
    swiftLanguageModes: [.v6]
)
