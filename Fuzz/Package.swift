// swift-tools-version: 6.0
// libFuzzer targets for every parser that reads input a user or a task controls (issue 10).
// A separate package so that the main build never sees sanitizer flags; build and run with
// ../scripts/fuzz.sh (it passes -sanitize=fuzzer,address to every Swift module).
import PackageDescription

let fuzzers: [(name: String, dependencies: [String])] = [
    ("FuzzTaskToml", ["DgrunSpec"]),
    ("FuzzProfile", ["DgrunSpec"]),
    ("FuzzSeccomp", ["DgrunSeccomp"]),
    ("FuzzElf", ["DgrunStatic"]),
    ("FuzzLdSoCache", ["DgrunStatic"]),
    ("FuzzShebang", ["DgrunStatic"]),
    ("FuzzScript", ["DgrunStatic"]),
    ("FuzzPython", ["DgrunStatic"]),
    ("FuzzDpkg", ["DgrunStatic"]),
    ("FuzzSockaddr", ["DgrunGraph"]),
    ("FuzzTraceLog", ["DgrunSystem"]),
    ("FuzzGraphJSON", ["DgrunGraph"]),
    ("FuzzStoreRows", ["DgrunStore"]),
    ("FuzzCgroupFiles", ["DgrunCgroups"]),
]

let package = Package(
    name: "dgrun-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        // The main package; `name:` keeps product references stable whatever the checkout's directory is called.
        .package(name: "dgrun", path: ".."),
    ],
    targets: [
        .target(name: "CFuzzDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzDriver", .product(name: "DgrunSystem", package: "dgrun")]),
    ] + fuzzers.map { fuzzer in
        var dependencies: [Target.Dependency] = ["FuzzSupport"]
        dependencies += fuzzer.dependencies.map { .product(name: $0, package: "dgrun") }
        return .executableTarget(name: fuzzer.name, dependencies: dependencies)
    },
    swiftLanguageModes: [.v6]
)
