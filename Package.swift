// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "dgrun",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "dgrun", targets: ["dgrun"]),
    ],
    dependencies: [],
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
        .target(name: "DgrunRuntime",
                dependencies: ["CDgrunSpawn", "DgrunSystem", "DgrunSpec", "DgrunSeccomp", "DgrunCgroups"]),
        .target(name: "DgrunGraph", dependencies: ["DgrunRuntime", "DgrunStatic", "DgrunSystem", "CDgrunSpawn"]),
        .target(name: "DgrunCommands", dependencies: ["DgrunRuntime", "DgrunSpec", "DgrunCgroups", "DgrunSeccomp", "DgrunGraph"]),
        .executableTarget(name: "dgrun", dependencies: ["DgrunCommands", "CDgrunSpawn"]),

        .testTarget(name: "DgrunSpecTests", dependencies: ["DgrunSpec", "DgrunSeccomp"]),
        .testTarget(name: "DgrunCgroupsTests", dependencies: ["DgrunCgroups", "DgrunSystem"]),
        .testTarget(name: "DgrunStaticTests", dependencies: ["DgrunStatic", "DgrunSystem"]),
        .testTarget(name: "DgrunIntegrationTests", dependencies: ["DgrunSystem", "DgrunCgroups"]),
    ],
    swiftLanguageModes: [.v6]
)
