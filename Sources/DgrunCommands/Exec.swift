import DgrunCache
import DgrunEngine
import DgrunPlanner
import DgrunRuntime
import DgrunSpec
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun exec`: options → request → engine → render → exit status (the shape of crun's run.c).
struct Exec {
    var request = RunRequest()
    var report: PinnedOutput?
    /// exec TASKDIR|WORKSPACE: the directory.
    var taskDirectory: String?

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
        options: sandboxOptions + planningOptions)

    /// The options of the sandbox itself, which discover shares. Each value is parsed and checked
    /// here, once: a bad one is exit 125 naming the option, before anything starts.
    static let sandboxOptions: [OptionSpec<Exec>] = [
        .value("memory", "size", "Memory limit, like docker (512m, 2g).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            target.request.limits.memoryBytes = try option("memory") { () throws(DgrunError) in try ByteSize.parse(text) }
            _ = try option("memory") { () throws(DgrunError) in try target.request.limits.validated(hostCPUs: DgrunSystem.ProcessInfo.cpuCount) }
        },
        .value("cpus", "n", "CPU limit in CPUs, like docker (1.5).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard let value = Double(text), value.isFinite else {
                throw DgrunError.usage("--cpus \"\(text)\" is not a number (like 1.5)", verb: "exec")
            }
            target.request.limits.cpus = value
            _ = try option("cpus") { () throws(DgrunError) in try target.request.limits.validated(hostCPUs: DgrunSystem.ProcessInfo.cpuCount) }
        },
        .value("pids", "n", "Maximum number of the task's processes and threads.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard let value = Int(text), value >= 1 else {
                throw DgrunError.usage("--pids \"\(text)\" is not a whole number of at least 1", verb: "exec")
            }
            target.request.limits.pids = value
        },
        .value("timeout", "duration", "Stop the sandbox after this long (30s, 10m); exit status 124.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            target.request.timeoutSeconds = try option("timeout") { () throws(DgrunError) in try DurationText.parse(text) }
        },
        .value("stop-timeout", "duration", "After --timeout or a signal to dgrun (INT, TERM, HUP, QUIT), which goes to every process of the sandbox: how long they have to stop before all are killed (default 10s).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            target.request.stopGraceSeconds = try option("stop-timeout") { () throws(DgrunError) in try DurationText.parse(text) }
        },
        .value("net", "none|host", "Network: none (loopback only) or host. Default: the profile's.") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.network = try choice(text, option: "net")
        },
        .value("ro", "path", "Bind a host path read-only (PATH or SRC:DST).") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.binds.append(try RunRequest.Bind.parse(text, readonly: true))
        },
        .value("rw", "path", "Bind a host path writable (PATH or SRC:DST).") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.binds.append(try RunRequest.Bind.parse(text, readonly: false))
        },
        .value("tmpfs", "path", "Mount an empty tmpfs at this path (besides /tmp).") { $0.request.tmpfs.append($1) },
        .value("profile", "name|file", "Sandbox profile: a name from profiles/ or a file (default: default).") { $0.request.profile = $1 },
        .value("seccomp", "file", "Seccomp profile (OCI JSON) instead of the profile's, or 'unconfined'.") { $0.request.seccomp = $1 },
        .value("cap-add", "cap", "Keep this capability (CAP_NET_BIND_SERVICE...).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            _ = try option("cap-add") { () throws(DgrunError) in try Capabilities.number(of: text) }
            target.request.capabilities.append(text)
        },
        .value("report", "file", "Write a JSON report of the run to this file.") { $0.report = PinnedOutput($1) },
        .value("rootfs", "dir", "Run in this root filesystem (see rootfs-scripts/) instead of the host's.") { $0.request.rootfs = $1 },
        .value("cwd", "dir", "Working directory (default: the current one, which is made writable).") { $0.request.workingDirectory = $1 },
        .value("hostname", "name", "Hostname inside the sandbox (default: dgrun).") { $0.request.hostname = $1 },
        .value("limits", "enforce|best-effort", "Without a writable cgroup: fail (enforce, the default) or use rlimits.") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.limitMode = try choice(text, option: "limits")
        },
        .value("userns", "host|auto", "Host ids of the sandbox: host (the caller's, the default) or auto (root only: a subordinate range, so the task's root is not the host's; bound directories idmapped).") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.userNamespace = try choice(text, option: "userns")
        },
        .value("user", "root|current", "Who the caller is inside: root (uid 0, the default) or its own uid.") {
            (target: inout Exec, text: String) throws(DgrunError) in target.request.user = try choice(text, option: "user")
        },
        .value("env", short: "e", "key=value", "Set an environment variable.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            do throws(DgrunError) { try target.request.setEnvironment(text) } catch { throw DgrunError.usage(error.message) }
        },
        .flag("clear-env", "Start from an empty environment (PATH, HOME, TERM, LANG kept).") { $0.request.clearEnvironment = true },
        .flag("new-session", "Run the command in a new session, without a controlling terminal.") { $0.request.newSession = true },
        .value("tune", "on|off", "Tune memory and CPU limits while the task runs (default: on).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard text == "on" || text == "off" else { throw DgrunError.usage("--tune \"\(text)\": use on or off", verb: "exec") }
            target.request.tune = text == "on"
        },
        .value("retry-oom", "n", "Run again up to N times with twice the memory after an OOM kill.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard let n = Int(text), (0...10).contains(n) else { throw DgrunError.usage("--retry-oom \"\(text)\": use 0 to 10", verb: "exec") }
            target.request.retryOOM = n
        },
    ]

    static let planningOptions: [OptionSpec<Exec>] = [
        .flag("force", "TASKDIR: run even when up to date (a blocked task still does not start).") { $0.request.force = true },
        .value("state", "dir", "TASKDIR: keep the state store here instead of TASKDIR/.dgrun.") {
            $0.request.stateDirectory = FileSystem.absolute($1)
        },
        .flag("no-deps", "TASKDIR: do not bring the workspace tasks it reads from up to date first.") { $0.request.noDependencies = true },
        .value("pool-memory", "size", "WORKSPACE: memory budget for tasks running at once (default: the host's).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            target.request.pool.memoryBytes = Int64(try option("pool-memory") { () throws(DgrunError) in try ByteSize.parse(text) })
        },
        .value("pool-cpus", "n", "WORKSPACE: CPU budget for tasks running at once (default: the host's CPUs).") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard let value = Double(text), value > 0, value.isFinite else {
                throw DgrunError.usage("--pool-cpus \"\(text)\" is not a positive number", verb: "exec")
            }
            target.request.pool.cpus = value
        },
        .value("cache", "dir|off", "TASKDIR: the local output cache (default: $XDG_CACHE_HOME/dgrun/cas), or off: never restore nor store outputs.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            guard !text.isEmpty else { throw DgrunError.usage("--cache needs a directory, or off", verb: "exec") }
            if text == "off" { target.request.cache.off = true } else { target.request.cache.directory = FileSystem.absolute(text) }
        },
        .value("cache-url", "url", "TASKDIR: a remote cache speaking the Bazel HTTP protocol (GET/PUT URL/ac/KEY, URL/cas/SHA256); also $DGRUN_CACHE_URL. An auth header from $DGRUN_CACHE_HEADER.") {
            (target: inout Exec, text: String) throws(DgrunError) in
            target.request.cache.url = try CacheRequest.checkedURL(text, what: "--cache-url")
        },
        .flag("cache-read-only", "TASKDIR: restore from the remote cache, never upload to it (untrusted pull requests); also $DGRUN_CACHE_READ_ONLY=1.") {
            $0.request.cache.readOnly = true
        },
    ]

    /// The cache's environment variables under the flags: a bad one is exit 125 like a bad flag.
    static func applyCacheEnvironment(_ cache: inout CacheRequest) throws(DgrunError) {
        if cache.url == nil, let env = getenv("DGRUN_CACHE_URL"), env.pointee != 0 {
            cache.url = try CacheRequest.checkedURL(String(cString: env), what: "DGRUN_CACHE_URL")
        }
        if let env = getenv("DGRUN_CACHE_READ_ONLY"), ["1", "true", "yes"].contains(String(cString: env)) { cache.readOnly = true }
        if let env = getenv("DGRUN_CACHE_HEADER"), env.pointee != 0 { _ = try RemoteCache.checkedHeader(String(cString: env)) }
        if let env = getenv("DGRUN_CACHE_MAX_SIZE"), env.pointee != 0 {
            _ = try option("DGRUN_CACHE_MAX_SIZE") { () throws(DgrunError) in try ByteSize.parse(String(cString: env)) }
        }
    }

    /// A value's error as a usage error naming the option.
    static func option<T>(_ name: String, _ body: () throws(DgrunError) -> T) throws(DgrunError) -> T {
        do throws(DgrunError) { return try body() } catch {
            let message = error.message.hasPrefix("--") ? error.message : "--\(name): \(error.message)"
            throw DgrunError.usage(message)
        }
    }

    /// Parses the arguments after `exec`; nil when --help was printed.
    static func parse(_ args: ArraySlice<String>) throws(DgrunError) -> Exec? {
        var exec = Exec()
        guard let parsed = try verb.parseOrShowHelp(args, into: &exec) else { return nil }
        switch (parsed.positionals.count, parsed.command.isEmpty) {
        case (0, false): exec.request.command = parsed.command
        case (1, true): exec.taskDirectory = parsed.positionals[0]
        case (0, true): throw DgrunError.usage("no task directory or command given; usage: \(verb.usage)", verb: "exec")
        default: throw DgrunError.usage("give one task directory or a command after --, not both; usage: \(verb.usage)", verb: "exec")
        }
        try applyCacheEnvironment(&exec.request.cache)
        return exec
    }

    func run() -> Int32 {
        let engine = Engine.forHost(sink: Terminal.render)
        if let taskDirectory {
            let result: DirectoryResult
            do throws(DgrunError) { result = try engine.execDirectory(taskDirectory, request: request) } catch {
                return finish(error)
            }
            return render(result)
        }
        let outcome: RunOutcome
        do throws(DgrunError) { outcome = try engine.runCommand(request) } catch {
            return finish(error)
        }
        if let message = outcome.error { Terminal.line("dgrun: \(message)") }
        if !writeReport(outcome) { return 125 }
        return outcome.exitCode
    }

    func render(_ result: DirectoryResult) -> Int32 {
        switch result {
        case .task(_, let taskResult, _):
            switch taskResult {
            case .ran(let outcome, _):
                // Its error, if any, was said with the `finished` event.
                if !writeReport(outcome) { return 125 }
            case .failed(let error):
                return finish(error)
            case .blocked(let blockers):
                _ = writeFailureReport("blocked by \(blockers.count) missing or unavailable dependencies", exitCode: DgrunExit.blocked)
            case .notStarted(let because):
                _ = writeFailureReport("not started: \(because)", exitCode: result.exitStatus)
            case .upToDate, .restored:
                break
            }
            return result.exitStatus
        case .workspace(let workspace):
            Terminal.summary(workspace)
            return workspace.exitStatus
        }
    }

    // MARK: - output

    /// dgrun's own failure before or while starting the sandbox: message, report, exit status.
    func finish(_ error: DgrunError) -> Int32 {
        Terminal.line("dgrun: \(error.message)")
        _ = writeFailureReport(error.message, exitCode: error.exitStatus)
        return error.exitStatus
    }

    func writeFailureReport(_ message: String, exitCode: Int32) -> Bool {
        report == nil || writeReport(.notStarted(argv: request.command, exitCode: exitCode, error: message))
    }

    /// Writes --report atomically: a reader never sees half a report.
    func writeReport(_ outcome: RunOutcome) -> Bool {
        guard let report else { return true }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            let data = try encoder.encode(outcome)
            try report.write(String(decoding: data, as: UTF8.self) + "\n")
            return true
        } catch {
            Terminal.line("dgrun: cannot write the report: \(error)")
            return false
        }
    }
}
