import DgrunCgroups
import DgrunRuntime
import DgrunSeccomp
import DgrunSpec
import DgrunStore
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun exec`: run a command in a sandbox with enforced limits.
struct Exec {
    var memory: String?
    var cpus: String?
    var pids: String?
    var timeout: String?
    var net: SandboxProfile.Network?
    var readonlyPaths: [String] = []
    var writablePaths: [String] = []
    var tmpfs: [String] = []
    var profile = "default"
    var seccomp: String?
    var capAdd: [String] = []
    var report: String?
    var rootfs: String?
    var cwd: String?
    var hostname = "dgrun"
    var limits: LimitMode = .enforce
    var user: SandboxSpec.UserMapping = .root
    var env: [String] = []
    var clearEnv = false
    var newSession = false
    var command: [String] = []
    /// exec TASKDIR|WORKSPACE: the directory, and how to plan it.
    var taskDirectory: String?
    var force = false
    var state: String?
    var noDependencies = false
    var pool = ResourcePool.Budget()
    /// Live tuning of memory and CPU limits (on by default); where they start (set from history).
    var tune = true
    var tuningPlan: SandboxSpec.TuningPlan?
    var retryOOM = 0

    static let verb = VerbSpec<Exec>(
        name: "exec",
        usage: "dgrun exec [options] (TASKDIR | WORKSPACE | -- CMD [ARGS...])",
        abstract: "Run a command in a sandbox with enforced limits.",
        discussion: """
        The sandbox: new user, mount, pid, ipc, uts and cgroup namespaces (and network with --net none),
        the host root read-only, the working directory writable, a private /tmp, a minimal /dev, no
        capabilities, no_new_privs, the profile's seccomp filter, and a cgroup with the limits.

        TASKDIR (a directory with a task.toml): the planner first checks everything the task's last
        run used (files by size, times and inode, hashed only when those moved; libraries and
        programs; services by a short connect; memory; cgroup controllers). Nothing changed: it is
        up to date and does not run (exit 0). Something missing or unavailable: it is blocked and
        does not start (exit 122). Otherwise it runs, traced, and its graph, outputs and record are
        stored in TASKDIR/.dgrun (or --state DIR, or $DGRUN_STATE_DIR). When TASKDIR is in a
        workspace, the tasks producing its inputs are brought up to date first.

        WORKSPACE (a directory of task directories): every stale task runs, in dependency order
        (a task that reads what another writes runs after it), in parallel within the pool.

        EXIT STATUS: the command's own; 128+N when it was killed by signal N; 124 when --timeout
        expired; 125 when dgrun failed (bad flag, bad profile, sandbox setup); 126 when the command
        cannot be executed; 127 when it is not found; 122 when a task was blocked before starting.

        EXAMPLES:
          dgrun exec --memory 512m --cpus 1.5 --pids 256 -- make -j2
          dgrun exec --net none --timeout 10m --report run.json -- ./test.sh
        """,
        options: [
            .value("memory", "size", "Memory limit, like docker (512m, 2g).") { $0.memory = $1 },
            .value("cpus", "n", "CPU limit in CPUs, like docker (1.5).") { $0.cpus = $1 },
            .value("pids", "n", "Maximum number of processes and threads.") { $0.pids = $1 },
            .value("timeout", "duration", "Stop the sandbox after this long (30s, 10m); exit status 124.") { $0.timeout = $1 },
            .value("net", "none|host", "Network: none (loopback only) or host. Default: the profile's.") {
                (target: inout Exec, text: String) throws(UsageError) in target.net = try choice(text, option: "net")
            },
            .value("ro", "path", "Bind a host path read-only (PATH or SRC:DST).") { $0.readonlyPaths.append($1) },
            .value("rw", "path", "Bind a host path writable (PATH or SRC:DST).") { $0.writablePaths.append($1) },
            .value("tmpfs", "path", "Mount an empty tmpfs at this path (besides /tmp).") { $0.tmpfs.append($1) },
            .value("profile", "name|file", "Sandbox profile: a name from profiles/ or a file (default: default).") { $0.profile = $1 },
            .value("seccomp", "file", "Seccomp profile (OCI JSON) instead of the profile's, or 'unconfined'.") { $0.seccomp = $1 },
            .value("cap-add", "cap", "Keep this capability (CAP_NET_BIND_SERVICE...).") { $0.capAdd.append($1) },
            .value("report", "file", "Write a JSON report of the run to this file.") { $0.report = $1 },
            .value("rootfs", "dir", "Run in this root filesystem (see rootfs-scripts/) instead of the host's.") { $0.rootfs = $1 },
            .value("cwd", "dir", "Working directory (default: the current one, which is made writable).") { $0.cwd = $1 },
            .value("hostname", "name", "Hostname inside the sandbox (default: dgrun).") { $0.hostname = $1 },
            .value("limits", "enforce|best-effort", "Without a writable cgroup: fail (enforce, the default) or use rlimits.") {
                (target: inout Exec, text: String) throws(UsageError) in target.limits = try choice(text, option: "limits")
            },
            .value("user", "root|current", "Who the caller is inside: root (uid 0, the default) or its own uid.") {
                (target: inout Exec, text: String) throws(UsageError) in target.user = try choice(text, option: "user")
            },
            .value("env", short: "e", "key=value", "Set an environment variable.") { $0.env.append($1) },
            .flag("clear-env", "Start from an empty environment (PATH, HOME, TERM, LANG kept).") { $0.clearEnv = true },
            .flag("new-session", "Run the command in a new session, without a controlling terminal.") { $0.newSession = true },
            .value("tune", "on|off", "Tune memory and CPU limits while the task runs (default: on).") {
                (target: inout Exec, text: String) throws(UsageError) in
                guard text == "on" || text == "off" else { throw UsageError(message: "--tune \"\(text)\": use on or off", verb: "exec") }
                target.tune = text == "on"
            },
            .value("retry-oom", "n", "Run again up to N times with twice the memory after an OOM kill.") {
                (target: inout Exec, text: String) throws(UsageError) in
                guard let n = Int(text), (0...10).contains(n) else { throw UsageError(message: "--retry-oom \"\(text)\": use 0 to 10", verb: "exec") }
                target.retryOOM = n
            },
            .flag("force", "TASKDIR: run even when up to date (a blocked task still does not start).") { $0.force = true },
            .value("state", "dir", "TASKDIR: keep the state store here instead of TASKDIR/.dgrun.") { $0.state = $1 },
            .flag("no-deps", "TASKDIR: do not bring the workspace tasks it reads from up to date first.") { $0.noDependencies = true },
            .value("pool-memory", "size", "WORKSPACE: memory budget for tasks running at once (default: the host's).") {
                (target: inout Exec, text: String) throws(UsageError) in
                do throws(SpecError) { target.pool.memoryBytes = Int64(try ByteSize.parse(text)) } catch {
                    throw UsageError(message: "--pool-memory: \(error.message)", verb: "exec")
                }
            },
            .value("pool-cpus", "n", "WORKSPACE: CPU budget for tasks running at once (default: the host's CPUs).") {
                (target: inout Exec, text: String) throws(UsageError) in
                guard let value = Double(text), value > 0 else { throw UsageError(message: "--pool-cpus \"\(text)\" is not a positive number", verb: "exec") }
                target.pool.cpus = value
            },
        ])

    /// Parses the arguments after `exec`; nil when --help was printed.
    static func parse(_ args: ArraySlice<String>) throws(UsageError) -> Exec? {
        var exec = Exec()
        guard let parsed = try verb.parseOrShowHelp(args, into: &exec) else { return nil }
        switch (parsed.positionals.count, parsed.command.isEmpty) {
        case (0, false): exec.command = parsed.command
        case (1, true): exec.taskDirectory = parsed.positionals[0]
        case (0, true): throw UsageError(message: "no task directory or command given; usage: \(verb.usage)", verb: "exec")
        default: throw UsageError(message: "give one task directory or a command after --, not both; usage: \(verb.usage)", verb: "exec")
        }
        return exec
    }

    /// Builds the spec, lets `configure` adjust it (discover turns tracing on), runs the sandbox.
    func launch(configure: (inout SandboxSpec) -> Void = { _ in }) throws -> RunOutcome {
        var spec = try makeSpec()
        configure(&spec)
        let detected = CgroupDrivers.detect()
        let launcher = Launcher(driver: detected.driver, driverUnavailableReason: detected.reason,
                                warn: { CLI.write(2, $0 + "\n") })
        return try launcher.run(spec)
    }

    /// Runs the sandbox; returns the exit status of the contract.
    func run() -> Int32 {
        if let taskDirectory { return Workspace.execute(directory: taskDirectory, exec: self) }
        var exec = self
        // History for tuned limits: only when there is a ceiling to tune below, and the store is
        // opened only for a command that has history (a marker file says so): a short command
        // pays nothing for it.
        let key = tune && (memory != nil || cpus != nil)
            ? AdHocHistory(argv: command, directory: FileIO.realPath(cwd ?? ".") ?? FileIO.currentDirectory()) : nil
        var store: Store? = nil  // opened once, for the plan and for the records
        if let key, key.exists {
            store = key.open()
            if let store {
                exec.tuningPlan = TuningFromHistory.plan(limits: (try? exec.makeLimits()) ?? ResourceLimits(), store: store, task: key.id)
            }
        }
        let outcome: RunOutcome
        do {
            outcome = try exec.launchRetryingOOM { attempt, _ in
                guard let key, key.worthRecording(attempt) else { return }
                if store == nil { store = key.open() }
                if let store { key.record(attempt, argv: exec.command, in: store) }
            }
        } catch {
            return finish(error)
        }
        if let message = outcome.error { CLI.write(2, "dgrun: \(message)\n") }
        if !writeReport(outcome) { return 125 }
        return outcome.exitCode
    }

    /// Launches; after an OOM kill, again with twice the memory, up to --retry-oom times. Each
    /// attempt is passed to `record`; the last outcome carries every retry in its adjustments.
    func launchRetryingOOM(configure: (inout SandboxSpec) -> Void = { _ in },
                           record: (_ attempt: RunOutcome, _ willRetry: Bool) -> Void) throws -> RunOutcome {
        var exec = self
        var retries: [RunOutcome.Adjustment] = []
        var elapsed = 0.0
        while true {
            var outcome = try exec.launch(configure: configure)
            elapsed += outcome.wallSeconds
            let limit = try? exec.makeLimits().memoryBytes
            let next = outcome.oomKilled && retries.count < retryOOM ? limit.flatMap(OOMRetry.nextLimit(after:)) : nil
            record(outcome, next != nil)
            if let limit, let next {
                CLI.write(2, "dgrun: OOM-killed at \(ByteSize.describe(limit)); retrying with \(ByteSize.describe(next)) (attempt \(retries.count + 2) of \(retryOOM + 1))\n")
                retries.append(RunOutcome.Adjustment(tSeconds: elapsed, knob: "memory.max", from: ByteSize.describe(limit),
                                                     to: ByteSize.describe(next), reason: "retry \(retries.count + 1) after an OOM kill"))
                exec.memory = String(next)
                exec.tuningPlan?.memoryStart = nil  // the new ceiling is the start: the last one was too small
                continue
            }
            outcome.adjustments = retries + outcome.adjustments
            return outcome
        }
    }

    // MARK: - spec

    func makeLimits() throws(SpecError) -> ResourceLimits {
        var limits = ResourceLimits()
        if let memory { limits.memoryBytes = try ByteSize.parse(memory) }
        if let cpus {
            guard let value = Double(cpus) else { throw SpecError("--cpus \"\(cpus)\" is not a number (like 1.5)") }
            limits.cpus = value
        }
        if let pids {
            guard let value = Int(pids) else { throw SpecError("--pids \"\(pids)\" is not a whole number") }
            limits.pids = value
        }
        return try limits.validated(hostCPUs: DgrunSystem.ProcessInfo.cpuCount)
    }

    func makeSpec() throws(SpecError) -> SandboxSpec {
        let exe = FileIO.realPath("/proc/self/exe") ?? CommandLine.arguments[0]
        let profile = try ProfileLocator.load(profile, executable: exe)
        let limits = try makeLimits()

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
        // The monitor samples every run with a cgroup; it moves limits only with --tune on.
        spec.tuning = tuningPlan ?? SandboxSpec.TuningPlan(tune: tune)
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
        // Parents before children: a read-only workspace must not cover the writable task inside it.
        spec.binds = spec.binds.enumerated().sorted {
            ($0.element.target.split(separator: "/").count, $0.offset) < ($1.element.target.split(separator: "/").count, $1.offset)
        }.map(\.element)
        spec.tmpfs = ["/tmp"] + (profile.tmpfs + tmpfs).map { Self.absolute($0) }

        let seccompChoice = seccomp ?? profile.seccompPath
        if let seccompChoice, seccompChoice != "unconfined" {
            spec.seccompProgram = try SeccompCache.program(path: seccompChoice)
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

    /// dgrun's own failure before or while starting the sandbox: message, report, exit status.
    func finish(_ error: any Error) -> Int32 {
        switch error {
        case let error as SpecError: return finish(failure: error.message, exitCode: 125)
        case let error as LaunchError: return finish(failure: error.message, exitCode: error.exitCode)
        default: return finish(failure: "\(error)", exitCode: 125)
        }
    }

    func finish(failure: String, exitCode: Int32, quiet: Bool = false) -> Int32 {
        if !quiet { CLI.write(2, "dgrun: \(failure)\n") }
        if report != nil, !writeReport(.notStarted(argv: command, exitCode: exitCode, error: failure)) { return 125 }
        return exitCode
    }

    /// Writes --report beside its final name, then renames: a reader never sees half a report.
    func writeReport(_ outcome: RunOutcome) -> Bool {
        guard let report else { return true }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let temporary = report + ".tmp-\(getpid())"
        do {
            let data = try encoder.encode(outcome)
            try FileIO.write(temporary, String(decoding: data, as: UTF8.self) + "\n", create: true)
            _ = try valueOrErrno("rename", path: report) { rename(temporary, report) }
            return true
        } catch {
            unlink(temporary)
            CLI.write(2, "dgrun: cannot write the report: \(error)\n")
            return false
        }
    }
}
