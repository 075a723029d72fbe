// swift-tools-version: 6.2
import PackageDescription

import class Foundation.ProcessInfo

/// Keyrack: trust-quorum unlock for racks of machines and attested key release.
///
/// Module layout follows `shared/spec/ARCHITECTURE.md`. The benchmark target
/// (ordo-one/benchmark) is only part of the package when `ENABLE_BENCHMARKS`
/// is set, so ordinary builds and CI stay fast.
let enableBenchmarks = ProcessInfo.processInfo.environment["ENABLE_BENCHMARKS"] != nil

/// The libFuzzer target for the quote parser (Fuzz/AttestationFuzz) is only
/// part of the package when `ENABLE_FUZZING` is set: it must be built with
/// `-Xswiftc -sanitize=fuzzer`, which ordinary builds do not pass.
let enableFuzzing = ProcessInfo.processInfo.environment["ENABLE_FUZZING"] != nil

/// Our own targets build with every warning an error, locally and in CI;
/// dependencies are not affected.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

var dependencies: [Package.Dependency] = [
    .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
]

var targets: [Target] = [
    .target(name: "CKeyrackSystem"),
    .target(
        name: "KeyrackCore",
        dependencies: ["CKeyrackSystem"],
        swiftSettings: strict
    ),
    .target(
        name: "SecretSharing",
        dependencies: [
            "KeyrackCore",
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "NodeAgent",
        dependencies: [
            "KeyrackCore",
            "CKeyrackSystem",
            "SecretSharing",
            "TrustQuorum",
            "Attestation",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "RedisClient",
        dependencies: [
            "KeyrackCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "KeyRelease",
        dependencies: [
            "KeyrackCore",
            "RedisClient",
            "Attestation",
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "KeyReleaseServer",
        dependencies: [
            "KeyrackCore",
            "KeyRelease",
            "RedisClient",
            "Attestation",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "KMSClient",
        dependencies: [
            "KeyrackCore",
            "KeyRelease",
            "Attestation",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "Attestation",
        dependencies: [
            "KeyrackCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "TrustQuorum",
        dependencies: [
            "KeyrackCore",
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "Simulation",
        dependencies: [
            "TrustQuorum",
            "KeyrackCore",
            "SecretSharing",
        ],
        swiftSettings: strict
    ),
    .target(
        name: "KeyrackLab",
        dependencies: [
            "KeyrackCore",
            "SecretSharing",
            "TrustQuorum",
            "NodeAgent",
            "KeyRelease",
            "KeyReleaseServer",
            "KMSClient",
            "Attestation",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: strict
    ),
    .executableTarget(
        name: "keyrack",
        dependencies: [
            "KeyrackCore",
            "SecretSharing",
            "Attestation",
            "KeyRelease",
            "KeyReleaseServer",
            "KMSClient",
            "NodeAgent",
            "KeyrackLab",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            "TrustQuorum",
            "Simulation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "KeyrackCoreTests",
        dependencies: ["KeyrackCore"],
        swiftSettings: strict
    ),
    .testTarget(
        name: "SecretSharingTests",
        dependencies: [
            "KeyrackCore",
            "SecretSharing",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        swiftSettings: strict
    ),
    .target(
        name: "KeyrackTestSupport",
        dependencies: [
            "KeyrackLab",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ],
        path: "Tests/TestSupport",
        swiftSettings: strict
    ),
    .testTarget(
        name: "RedisClientTests",
        dependencies: [
            "KeyrackLab",
            "RedisClient",
            "KeyrackTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "KeyReleaseTests",
        dependencies: [
            "KeyRelease",
            "KeyReleaseServer",
            "KMSClient",
            "Attestation",
            "RedisClient",
            "KeyrackCore",
            "SecretSharing",
            "KeyrackTestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "PropertyBased", package: "swift-property-based"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "AttestationTests",
        dependencies: [
            "Attestation",
            "KeyrackCore",
            "KeyrackTestSupport",
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "NodeAgentTests",
        dependencies: [
            "NodeAgent",
            "KeyrackTestSupport",
            "Attestation",
            "TrustQuorum",
            "KeyrackCore",
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "KMSEndToEndTests",
        dependencies: [
            "KeyrackLab",
            "keyrack",
            "KeyRelease",
            "KeyReleaseServer",
            "KMSClient",
            "Attestation",
            "RedisClient",
            "KeyrackCore",
            "SecretSharing",
            "KeyrackTestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "TrustQuorumTests",
        dependencies: [
            "TrustQuorum",
            "KeyrackTestSupport",
            "KeyrackCore",
            "SecretSharing",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "SimulationTests",
        dependencies: [
            "Simulation",
            "TrustQuorum",
            "KeyrackCore",
            "SecretSharing",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "RackTests",
        dependencies: [
            "KeyrackLab",
            "keyrack",
            "NodeAgent",
            "Attestation",
            "TrustQuorum",
            "KeyrackCore",
            "SecretSharing",
            "KeyrackTestSupport",
            .product(name: "X509", package: "swift-certificates"),
        ],
        swiftSettings: strict
    ),
    .testTarget(
        name: "KeyrackCLITests",
        dependencies: [
            "keyrack",
            "KeyrackCore",
            "SecretSharing",
            "KeyrackTestSupport",
        ],
        swiftSettings: strict
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
                "KeyrackCore",
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

if enableFuzzing {
    targets.append(.target(name: "CFuzzerDriver", path: "Fuzz/CFuzzerDriver"))
    targets.append(
        .executableTarget(
            name: "AttestationFuzz",
            dependencies: ["Attestation", "CFuzzerDriver"],
            path: "Fuzz/AttestationFuzz",
            swiftSettings: strict
        )
    )
}

let package = Package(
    name: "keyrack",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyrack", targets: ["keyrack"]),
        .library(name: "KeyrackCore", targets: ["KeyrackCore"]),
        .library(name: "SecretSharing", targets: ["SecretSharing"]),
        .library(name: "Attestation", targets: ["Attestation"]),
        .library(name: "TrustQuorum", targets: ["TrustQuorum"]),
        .library(name: "Simulation", targets: ["Simulation"]),
    ],
    dependencies: dependencies,
    targets: targets,
    swiftLanguageModes: [.v6]
)
