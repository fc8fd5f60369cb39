import ArgumentParser
import DgrunCgroups
import DgrunRuntime
import DgrunSeccomp
import DgrunSpec
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

extension LimitMode: ExpressibleByArgument {}
extension SandboxProfile.Network: ExpressibleByArgument {}
extension SandboxSpec.UserMapping: ExpressibleByArgument {}

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a sandbox with enforced limits.",
        discussion: """
        Exit status: the command's own; 128+N when it was killed by signal N; 124 when --timeout
        expired; 125 when dgrun failed (bad flag, bad profile, sandbox setup); 126 when the command
        cannot be executed; 127 when it is not found.

        Examples:
          dgrun exec --memory 512m --cpus 1.5 --pids 256 -- make -j2
          dgrun exec --net none --timeout 10m --report run.json -- ./test.sh
        """)

    @Option(help: ArgumentHelp("Memory limit, like docker (512m, 2g).", valueName: "size"))
    var memory: String?

    @Option(help: ArgumentHelp("CPU limit in CPUs, like docker (1.5).", valueName: "n"))
    var cpus: String?

    @Option(help: ArgumentHelp("Maximum number of processes and threads.", valueName: "n"))
    var pids: Int?

    @Option(help: ArgumentHelp("Stop the sandbox after this long (30s, 10m); exit status 124.", valueName: "duration"))
    var timeout: String?

    @Option(help: "Network: none (loopback only) or host. Default: the profile's (host).")
    var net: SandboxProfile.Network?

    @Option(name: .customLong("ro"), help: ArgumentHelp("Bind a host path read-only (PATH or SRC:DST).", valueName: "path"))
    var readonlyPaths: [String] = []

    @Option(name: .customLong("rw"), help: ArgumentHelp("Bind a host path writable (PATH or SRC:DST).", valueName: "path"))
    var writablePaths: [String] = []

    @Option(help: ArgumentHelp("Mount an empty tmpfs at this path (besides /tmp).", valueName: "path"))
    var tmpfs: [String] = []

    @Option(help: ArgumentHelp("Sandbox profile: a name from profiles/ or a file.", valueName: "name|file"))
    var profile: String = "default"

    @Option(help: ArgumentHelp("Seccomp profile (OCI JSON) instead of the profile's, or 'unconfined'.", valueName: "file"))
    var seccomp: String?

    @Option(name: .customLong("cap-add"), help: ArgumentHelp("Keep this capability (CAP_NET_BIND_SERVICE...).", valueName: "cap"))
    var capAdd: [String] = []

    @Option(help: ArgumentHelp("Write a JSON report of the run to this file.", valueName: "file"))
    var report: String?

    @Option(help: ArgumentHelp("Run in this root filesystem (see rootfs-scripts/) instead of the host's.", valueName: "dir"))
    var rootfs: String?

    @Option(help: ArgumentHelp("Working directory (default: the current one, which is made writable).", valueName: "dir"))
    var cwd: String?

    @Option(help: "Hostname inside the sandbox.")
    var hostname: String = "dgrun"

    @Option(help: "Where limits cannot be enforced with a cgroup: enforce (fail) or best-effort (rlimits).")
    var limits: LimitMode = .enforce

    @Option(help: "Who the caller is inside: root (uid 0, the default) or current (its own uid).")
    var user: SandboxSpec.UserMapping = .root

    @Option(name: [.customShort("e"), .customLong("env")], help: ArgumentHelp("Set an environment variable.", valueName: "key=value"))
    var env: [String] = []

    @Flag(help: "Start from an empty environment (PATH, HOME, TERM, LANG kept).")
    var clearEnv = false

    @Flag(help: "Run the command in a new session, without a controlling terminal.")
    var newSession = false

    @Argument(help: ArgumentHelp("Task directory (not supported yet: use -- CMD).", valueName: "taskdir"))
    var taskDirectory: String?

    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command and its arguments, after --.", valueName: "cmd"))
    var command: [String] = []

    func validate() throws {
        if let taskDirectory {
            throw ValidationError("task directories (\(taskDirectory)) are not supported by exec yet; run a command with: dgrun exec [options] -- CMD [ARGS...]")
        }
        if command.isEmpty {
            throw ValidationError("no command given; usage: dgrun exec [options] -- CMD [ARGS...]")
        }
    }

    func run() throws {
        let outcome: RunOutcome
        do {
            let spec = try makeSpec()
            let detected = CgroupDrivers.detect()
            let launcher = Launcher(driver: detected.driver, driverUnavailableReason: detected.reason,
                                    warn: { Self.printError($0) })
            outcome = try launcher.run(spec)
        } catch let error as SpecError {
            try finish(failure: error.message, exitCode: 125)
            return
        } catch let error as LaunchError {
            try finish(failure: error.message, exitCode: error.exitCode)
            return
        }
        if let message = outcome.error { Self.printError("dgrun: \(message)") }
        try writeReport(outcome)
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }

    // MARK: - spec

    func makeSpec() throws(SpecError) -> SandboxSpec {
        let exe = FileIO.realPath("/proc/self/exe") ?? CommandLine.arguments[0]
        let profile = try ProfileLocator.load(profile, executable: exe)

        var limits = ResourceLimits()
        if let memory { limits.memoryBytes = try ByteSize.parse(memory) }
        if let cpus {
            guard let value = Double(cpus) else { throw SpecError("--cpus \"\(cpus)\" is not a number (like 1.5)") }
            limits.cpus = value
        }
        limits.pids = pids
        limits = try limits.validated(hostCPUs: DgrunSystem.ProcessInfo.cpuCount)

        var environment = Self.inheritedEnvironment()
        if clearEnv || profile.clearEnv {
            let keep = Set(["PATH", "HOME", "TERM", "LANG", "LC_ALL"] + profile.keepEnv)
            environment = environment.filter { keep.contains(String($0.prefix(while: { $0 != "=" }))) }
        }
        for assignment in env {
            guard let eq = assignment.firstIndex(of: "="), eq != assignment.startIndex else {
                throw SpecError("--env \"\(assignment)\" must look like KEY=VALUE")
            }
            let key = assignment[..<eq]
            environment.removeAll { $0.hasPrefix(key + "=") }
            environment.append(assignment)
        }

        var spec = SandboxSpec(argv: command, environment: environment, workingDirectory: "/")
        spec.hostname = hostname
        spec.network = net ?? profile.network
        spec.limits = limits
        spec.limitMode = self.limits
        spec.userMapping = user
        spec.newSession = newSession || profile.newSession
        if let timeout { spec.timeoutSeconds = try DurationText.parse(timeout) }
        spec.keepCapabilities = try Capabilities.mask(profile.capabilities + capAdd)

        if let rootfs {
            guard let root = FileIO.realPath(rootfs), FileIO.isDirectory(root) else {
                throw SpecError("--rootfs \(rootfs) is not a directory (build one with rootfs-scripts/build-busybox-rootfs.sh)")
            }
            spec.rootfs = root
            spec.workingDirectory = cwd ?? "/"
        } else {
            let dir = cwd ?? FileIO.currentDirectory()
            guard let real = FileIO.realPath(dir), FileIO.isDirectory(real) else {
                throw SpecError("--cwd \(dir) is not a directory")
            }
            spec.workingDirectory = real
            // The working directory is the one writable place by default; never the whole root.
            if real != "/" { spec.binds.append(.init(source: real, target: real, readonly: false)) }
        }
        for (paths, readonly) in [(profile.readonly + readonlyPaths, true), (profile.writable + writablePaths, false)] {
            for path in paths { spec.binds.append(try Self.bind(path, readonly: readonly)) }
        }
        spec.tmpfs = ["/tmp"] + (profile.tmpfs + tmpfs).map { Self.absolute($0) }

        let seccompChoice = seccomp ?? profile.seccompPath
        if let seccompChoice, seccompChoice != "unconfined" {
            spec.seccompProgram = try SeccompCompiler.load(path: seccompChoice)
        }
        return spec
    }

    static func bind(_ text: String, readonly: Bool) throws(SpecError) -> SandboxSpec.Bind {
        let flag = readonly ? "--ro" : "--rw"
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let first = parts.first, let source = FileIO.realPath(first) else {
            throw SpecError("\(flag) \(text): the host path does not exist")
        }
        let target = parts.count == 2 ? absolute(parts[1]) : source
        return .init(source: source, target: target, readonly: readonly)
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileIO.currentDirectory() + "/" + path
    }

    static func inheritedEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    // MARK: - output

    func finish(failure: String, exitCode: Int32) throws {
        Self.printError("dgrun: \(failure)")
        if report != nil {
            try writeReport(.notStarted(argv: command, exitCode: exitCode, error: failure))
        }
        throw ExitCode(exitCode)
    }

    func writeReport(_ outcome: RunOutcome) throws {
        guard let report else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try encoder.encode(outcome) } catch {
            Self.printError("dgrun: cannot encode the report: \(error)")
            throw ExitCode(125)
        }
        // Write beside, then rename: a reader never sees half a report.
        let temporary = report + ".tmp-\(getpid())"
        do {
            try FileIO.write(temporary, String(decoding: data, as: UTF8.self) + "\n", create: true)
            _ = try valueOrErrno("rename", path: report) { rename(temporary, report) }
        } catch {
            unlink(temporary)
            Self.printError("dgrun: cannot write the report: \(error)")
            throw ExitCode(125)
        }
    }

    static func printError(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { buf in _ = Glibc.write(2, buf.baseAddress, buf.count) }
    }
}
