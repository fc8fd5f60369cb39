// swift-tools-version: 6.0
import PackageDescription

/// This manifest's directory: the linker's search path below must not depend on where swift runs.
let packageDirectory = String(#filePath.dropLast("/Package.swift".count))

/// A release build of dgrun is linked as a position-dependent executable: a PIE's 40,497 relative
/// relocations made every start write 124 pages and read 950 KB of relocation table
/// (`exec -- /bin/true` 6.1 -> 5.6 ms, 531 -> 390 page faults). The libraries, heap and stacks stay
/// randomised; only the executable's own image sits at a fixed address. It needs the Swift
/// runtime linked in, as every release build here is (`--static-swift-stdlib`): against the shared
/// libswiftCore the loader warns of references to its protected functions. `DGRUN_PIE=1 swift
/// build -c release` links a PIE (with the shared runtime, say). Debug builds stay PIEs.
let positionDependentExecutable: [String] =
    Context.environment["DGRUN_PIE"] == "1" ? [] : ["-Xclang-linker", "-no-pie"]

let package = Package(
    name: "dgrun",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "dgrun", targets: ["dgrun"]),
        // The parsers' modules, for the fuzzers in Fuzz/ (a separate package that depends on this one by path).
        .library(name: "DgrunSystem", targets: ["DgrunSystem"]),
        .library(name: "DgrunSpec", targets: ["DgrunSpec"]),
        .library(name: "DgrunSeccomp", targets: ["DgrunSeccomp"]),
        .library(name: "DgrunCgroups", targets: ["DgrunCgroups"]),
        .library(name: "DgrunStatic", targets: ["DgrunStatic"]),
        .library(name: "DgrunGraph", targets: ["DgrunGraph"]),
        .library(name: "DgrunStore", targets: ["DgrunStore"]),
    ],
    // No package dependencies: the state store talks to the system's libsqlite3 directly
    // (Sources/DgrunStore/SQLite.swift says why GRDB was left, with the figures).
    targets: [
        // The modules follow the data flow (ARCHITECTURE.md): each imports only modules before it.
        // Everything between clone and exec: async-signal-safe C, no Swift.
        .target(name: "CDgrunSpawn"),
        // The executable's argv, given to the Swift runtime without its read of /proc/self/maps
        // (start.c says why). Linked by the executable alone.
        .target(name: "CDgrunStart"),
        // libseccomp and libcap are linked in statically by the modules that use them (below):
        // each shared library cost every start a search along the run path, its mappings and its
        // relocations. No pkgConfig, whose `-lseccomp` / `-lcap` would link the shared ones.
        .systemLibrary(name: "CSeccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", providers: [.apt(["libcap-dev"])]),
        // No pkgConfig: its `-L/usr/lib/... -lsqlite3` would link the shared library.
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "DgrunSystem", dependencies: ["CDgrunSpawn"]),
        .target(name: "DgrunSpec", dependencies: ["DgrunSystem", "CCap"],
                linkerSettings: [.unsafeFlags(["-Xlinker", "-l:libcap.a"])]),
        .target(name: "DgrunSeccomp", dependencies: ["DgrunSystem", "DgrunSpec", "CSeccomp", "CDgrunSpawn"],
                linkerSettings: [.unsafeFlags(["-Xlinker", "-l:libseccomp.a"])]),
        .target(name: "DgrunCgroups", dependencies: ["DgrunSystem", "DgrunSpec"]),
        .target(name: "DgrunStatic", dependencies: ["DgrunSystem"]),
        .target(name: "DgrunGraph", dependencies: ["DgrunStatic", "DgrunSystem"]),
        // SQLite linked in statically, as SQLite itself recommends embedding it: Debian's
        // libsqlite3.so is built with BIND_NOW and made the loader resolve 1,610 relocations at
        // every start, 90% of dgrun's symbol lookups. The archive comes with libsqlite3-dev, as
        // the header does; a rebuild picks up its updates.
        .target(name: "DgrunStore", dependencies: ["DgrunSystem", "DgrunSpec", "CSQLite"],
                linkerSettings: [.unsafeFlags(["-Xlinker", "-l:libsqlite3.a"]), .linkedLibrary("m")]),
        .target(name: "DgrunPlanner", dependencies: ["DgrunStore", "DgrunSpec", "DgrunSystem"]),
        .target(name: "DgrunCache", dependencies: ["DgrunPlanner", "DgrunStore", "DgrunSpec", "DgrunSystem", "CDgrunSpawn"]),
        .target(name: "DgrunMonitor", dependencies: ["DgrunCgroups", "DgrunSpec", "DgrunSystem", "CDgrunSpawn"]),
        .target(name: "DgrunProvision", dependencies: ["DgrunSpec", "DgrunSystem", "DgrunSeccomp", "DgrunCgroups", "DgrunMonitor",
                                                      "CDgrunSpawn"]),
        .target(name: "DgrunRuntime",
                dependencies: ["CDgrunSpawn", "DgrunSystem", "DgrunSpec", "DgrunSeccomp", "DgrunCgroups", "DgrunProvision"]),
        .target(name: "DgrunRecord", dependencies: ["DgrunCache", "DgrunGraph", "DgrunStore", "DgrunPlanner", "DgrunRuntime", "DgrunProvision",
                                                   "DgrunSpec", "DgrunSystem"]),
        .target(name: "DgrunEngine", dependencies: ["CDgrunSpawn", "DgrunCache", "DgrunRecord", "DgrunRuntime", "DgrunProvision", "DgrunMonitor", "DgrunPlanner",
                                                   "DgrunStore", "DgrunGraph", "DgrunCgroups", "DgrunSpec", "DgrunSystem"]),
        .target(name: "DgrunCommands", dependencies: ["DgrunCache", "DgrunEngine", "DgrunRecord", "DgrunRuntime", "DgrunProvision", "DgrunSpec",
                                                      "DgrunGraph", "DgrunStore", "DgrunPlanner", "DgrunSystem"]),
        // --no-export-dynamic: the 3,969 public Swift symbols of dgrun's modules were exported from
        // the executable, and the Swift runtime's start (its path, by dladdr) walked them all:
        // 136 K instructions of an exec's 1.91 M. Nothing looks dgrun's own symbols up at run time.
        // libstdc++ (which the Swift runtime uses) linked in statically: binding its symbols cost
        // each start 0.6 ms (`dgrun --version` 2.7 -> 2.1 ms). The directory holds a linker script
        // named libstdc++.so that ld finds first; it names libstdc++.a, found in the usual places.
        // libgcc linked in statically too (its unwinder, which libstdc++ uses): the shared
        // libgcc_s cost each start its search, mappings and a constructor that runs CPUID, each a
        // VM exit here (`dgrun --version` 1.11 -> 1.00 ms, `exec -- /bin/true` 6.50 -> 6.27 ms,
        // interleaved rounds).
        .executableTarget(name: "dgrun", dependencies: ["DgrunCommands", "CDgrunSpawn", "CDgrunStart"],
                          exclude: ["static-libstdc++"],
                          linkerSettings: [.unsafeFlags(["-L", packageDirectory + "/Sources/dgrun/static-libstdc++"], .when(platforms: [.linux])),
                                           .unsafeFlags(positionDependentExecutable, .when(platforms: [.linux], configuration: .release)),
                                           .unsafeFlags(["-Xclang-linker", "-static-libgcc"], .when(platforms: [.linux])),
                                           .unsafeFlags(["-Xlinker", "--no-export-dynamic"], .when(platforms: [.linux], configuration: .release))]),

        .testTarget(name: "DgrunSpecTests", dependencies: ["DgrunSpec", "DgrunSeccomp"]),
        .testTarget(name: "DgrunCgroupsTests", dependencies: ["DgrunCgroups", "DgrunSystem"]),
        .testTarget(name: "DgrunStaticTests", dependencies: ["DgrunStatic", "DgrunSystem"]),
        .testTarget(name: "DgrunGraphTests", dependencies: ["DgrunGraph"]),
        .testTarget(name: "DgrunSystemTests", dependencies: ["DgrunSystem"]),
        .testTarget(name: "DgrunPlannerTests", dependencies: ["DgrunPlanner", "DgrunStore", "DgrunSystem"]),
        .testTarget(name: "DgrunCacheTests", dependencies: ["DgrunCache", "DgrunStore", "DgrunSpec", "DgrunSystem"]),
        .testTarget(name: "DgrunMonitorTests", dependencies: ["DgrunMonitor", "DgrunCgroups", "DgrunSpec"]),
        .testTarget(name: "DgrunEngineTests", dependencies: ["DgrunEngine", "DgrunProvision", "DgrunPlanner", "DgrunSpec", "DgrunStore"]),
        .testTarget(name: "DgrunCommandsTests", dependencies: ["DgrunCommands", "DgrunEngine", "DgrunRuntime", "DgrunPlanner", "DgrunSpec",
                                                           "DgrunSystem"]),
        .testTarget(name: "DgrunIntegrationTests", dependencies: ["DgrunSystem", "DgrunCgroups", "DgrunStore", "DgrunStatic"]),
    ],
    swiftLanguageModes: [.v6]
)

/// Generic types (`[String: Int]`, `Optional<Dependency>`...) reached through their metadata
/// accessors, not by mangled name: the runtime demangled each such name on first use, ~9 K
/// instructions a type, 1.2 M of the 5,000-dependency no-op's 6.8 M and a third of an exec's
/// start-up (callgrind: no-op 6.84 -> 6.17 M, `exec -- /bin/true` 2.43 -> 1.91 M; 250 KB more
/// code). In every configuration, so that the tests run the code that ships.
for target in package.targets where target.name.hasPrefix("Dgrun") || target.name == "dgrun" {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .unsafeFlags(["-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors"]),
    ]
}
