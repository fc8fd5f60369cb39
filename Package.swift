// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "dgrun",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "dgrun", targets: ["dgrun"]),
    ],
    dependencies: [
        // SQLite for the state store (graphs, runs, samples); links the system libsqlite3.
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
    ],
    targets: [
        // Everything between clone and exec: async-signal-safe C, no Swift.
        .target(name: "CDgrunSpawn"),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap",
                       providers: [.apt(["libcap-dev"])]),
        .target(name: "DgrunSystem", dependencies: ["CDgrunSpawn"]),
        .target(name: "DgrunSpec", dependencies: ["DgrunSystem", "CCap"]),
        .target(name: "DgrunSeccomp", dependencies: ["DgrunSystem", "DgrunSpec", "CSeccomp", "CDgrunSpawn"]),
        .target(name: "DgrunCgroups", dependencies: ["DgrunSystem", "DgrunSpec"]),
        .target(name: "DgrunStatic", dependencies: ["DgrunSystem"]),
        .target(name: "DgrunMonitor", dependencies: ["DgrunCgroups", "DgrunSystem", "CDgrunSpawn"]),
        .target(name: "DgrunRuntime",
                dependencies: ["CDgrunSpawn", "DgrunSystem", "DgrunSpec", "DgrunSeccomp", "DgrunCgroups", "DgrunMonitor"]),
        .target(name: "DgrunGraph", dependencies: ["DgrunRuntime", "DgrunStatic", "DgrunSystem", "CDgrunSpawn"]),
        .target(name: "DgrunStore", dependencies: [.product(name: "GRDB", package: "GRDB.swift"),
                                                  .product(name: "GRDBSQLite", package: "GRDB.swift")]),
        .target(name: "DgrunPlanner", dependencies: ["DgrunStore", "DgrunSystem"]),
        .target(name: "DgrunProvision", dependencies: ["DgrunSpec", "DgrunSystem"]),
        .target(name: "DgrunCommands", dependencies: ["DgrunRuntime", "DgrunSpec", "DgrunCgroups", "DgrunSeccomp", "DgrunGraph",
                                                      "DgrunStore", "DgrunPlanner", "DgrunProvision"]),
        .executableTarget(name: "dgrun", dependencies: ["DgrunCommands", "CDgrunSpawn"]),

        .testTarget(name: "DgrunSpecTests", dependencies: ["DgrunSpec", "DgrunSeccomp"]),
        .testTarget(name: "DgrunCgroupsTests", dependencies: ["DgrunCgroups", "DgrunSystem"]),
        .testTarget(name: "DgrunStaticTests", dependencies: ["DgrunStatic", "DgrunSystem"]),
        .testTarget(name: "DgrunGraphTests", dependencies: ["DgrunGraph"]),
        .testTarget(name: "DgrunSystemTests", dependencies: ["DgrunSystem"]),
        .testTarget(name: "DgrunPlannerTests", dependencies: ["DgrunPlanner", "DgrunStore"]),
        .testTarget(name: "DgrunMonitorTests", dependencies: ["DgrunMonitor", "DgrunCgroups"]),
        .testTarget(name: "DgrunIntegrationTests", dependencies: ["DgrunSystem", "DgrunCgroups", "DgrunStore"]),
    ],
    swiftLanguageModes: [.v6]
)
