// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "worker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "workerd", targets: ["workerd"]),
        .executable(name: "workerctl", targets: ["workerctl"]),
        .library(name: "WorkerEngine", targets: ["WorkerEngine"]),
        .library(name: "WorkerRuntime", targets: ["WorkerRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // Queue operations on PostgreSQL: claim, ack, fail, dead-letter, redrive, stats, migrations.
        .target(
            name: "WorkerEngine",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // Domain handlers: what a job of each kind does.
        .target(
            name: "WorkerHandlers",
            dependencies: [
                "WorkerEngine",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The published event schemas, compiled into the binary: nothing to install beside it.
            resources: [
                .embedInCode("Schemas/refund.requested.schema.json"),
                .embedInCode("Schemas/booking.requested.schema.json"),
            ],
            swiftSettings: strict
        ),
        // The long-running worker: lanes, wake-ups, heartbeats, shutdown, metrics, systemd.
        .target(
            name: "WorkerRuntime",
            dependencies: [
                "WorkerEngine",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Command-line parsing and commands of both executables, testable as a library.
        .target(
            name: "WorkerCLI",
            dependencies: [
                "WorkerEngine", "WorkerRuntime", "WorkerHandlers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "workerd", dependencies: ["WorkerCLI"], swiftSettings: strict),
        .executableTarget(name: "workerctl", dependencies: ["WorkerCLI"], swiftSettings: strict),
        // Makes integration tests short: a fresh migrated database per test.
        .target(
            name: "WorkerTestSupport",
            dependencies: [
                "WorkerEngine",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "WorkerTests",
            dependencies: ["WorkerEngine", "WorkerRuntime", "WorkerHandlers", "WorkerCLI", "WorkerTestSupport"],
            swiftSettings: strict
        ),
    ]
)
