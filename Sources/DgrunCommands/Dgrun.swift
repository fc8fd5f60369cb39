import ArgumentParser

public struct Dgrun: ParsableCommand {
    public static let version = "0.1.0"
    public static let configuration = CommandConfiguration(
        commandName: "dgrun",
        abstract: "A Linux sandbox runtime for builds, tests and data jobs.",
        discussion: """
        dgrun exec runs a command in new user, mount, pid, ipc, uts and cgroup namespaces (and a new
        network namespace with --net none), with the host root read-only, a seccomp filter, no
        capabilities, and cgroup limits (v2 or the v1/hybrid layout).
        """,
        version: version,
        subcommands: [Exec.self])

    public init() {}
}
