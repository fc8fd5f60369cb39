import DgrunSystem

/// What a caller asks of one run, typed and validated once, before anything starts. Every face fills
/// one (exec's and discover's flags, a workspace run, a CI step, later an OCI bundle) and the engine
/// gives the same request to every task it runs: a workspace task and an upstream task get exactly
/// what the caller asked for.
///
/// Precedence, applied in one place each: a flag (set here) > task.toml (`applying(_:)`) > the
/// sandbox profile > the built-in default (both in the provisioner). A nil field was not asked for.
public struct RunRequest: Sendable, Equatable {
    public enum UserMapping: String, Sendable, CaseIterable {
        /// The caller is uid/gid 0 inside (with capabilities only over the sandbox's own namespaces).
        case root
        /// The caller keeps its own uid/gid inside.
        case current
    }

    /// Which host ids the sandbox's ids are.
    public enum UserNamespaceMode: String, Sendable, CaseIterable {
        /// The caller's own: root's sandbox runs as host root (without capabilities).
        case host
        /// A subordinate range (/etc/subuid and /etc/subgid, or dgrun's reserved one): the task's
        /// root is an unprivileged host id, and the directories bound in are idmapped so that what
        /// it writes there belongs to the caller. Root only.
        case auto
    }

    /// A host path shown in the sandbox: `PATH` or `SRC:DST` as typed.
    public struct Bind: Sendable, Equatable {
        public var source: String
        /// nil: the same path as the source.
        public var target: String?
        public var readonly: Bool
        public init(source: String, target: String? = nil, readonly: Bool) {
            self.source = source
            self.target = target
            self.readonly = readonly
        }
        /// `PATH` or `SRC:DST`.
        public static func parse(_ text: String, readonly: Bool) throws(DgrunError) -> Bind {
            let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
            guard let first = parts.first, !first.isEmpty else {
                throw DgrunError("\(readonly ? "--ro" : "--rw") \"\(text)\": give a host path, or SRC:DST")
            }
            return Bind(source: first, target: parts.count == 2 ? parts[1] : nil, readonly: readonly)
        }
    }

    /// The memory and CPU a workspace's tasks may use at once; nil: the host's.
    public struct PoolBudget: Sendable, Equatable {
        public var memoryBytes: Int64?
        public var cpus: Double?
        public init(memoryBytes: Int64? = nil, cpus: Double? = nil) {
            self.memoryBytes = memoryBytes
            self.cpus = cpus
        }
    }

    /// argv; for a task, its command (from task.toml).
    public var command: [String] = []
    /// Limits as bytes, CPUs and a count; each nil when not asked for.
    public var limits = ResourceLimits()
    public var timeoutSeconds: Double?
    /// After a timeout or a signal to dgrun: SIGTERM (or that signal) to every process of the
    /// sandbox, then everything still there is killed after this long (`docker stop`'s 10 s).
    public var stopGraceSeconds: Double = 10
    public var network: SandboxProfile.Network?
    public var binds: [Bind] = []
    public var tmpfs: [String] = []
    /// KEY=VALUE, in order; a later one replaces an earlier one of the same key.
    public var environment: [String] = []
    public var clearEnvironment = false
    public var newSession = false
    /// A profile name or file; nil: "default".
    public var profile: String?
    /// An OCI seccomp profile file instead of the profile's, or "unconfined".
    public var seccomp: String?
    public var capabilities: [String] = []
    public var rootfs: String?
    /// nil: the current directory (exec -- CMD), the task's workdir (a task).
    public var workingDirectory: String?
    public var hostname: String?
    public var limitMode: LimitMode = .enforce
    public var user: UserMapping = .root
    public var userNamespace: UserNamespaceMode = .host
    /// Live tuning of memory and CPU limits.
    public var tune = true
    /// After an OOM kill, run again with twice the memory, up to this many times.
    public var retryOOM = 0
    /// Where task stores live: --state DIR (absolute), else $DGRUN_STATE_DIR, else TASKDIR/.dgrun.
    public var stateDirectory: String?
    /// TASKDIR and WORKSPACE: run even when up to date.
    public var force = false
    /// TASKDIR: do not bring the workspace tasks it reads from up to date first.
    public var noDependencies = false
    public var pool = PoolBudget()
    /// discover with the graph on stdout: the task's stdout goes to stderr, so stdout is only JSON.
    public var stdoutToStderr = false
    /// discover: trace the run and how long to trace what it leaves running.
    public var trace = false
    public var lingerSeconds: Double = 0
    /// dgrun ci: each task's stdout and stderr go to DIR/NAME.log (not dgrun's own), so that a
    /// face can show each task's log in one piece and quote its last lines. nil: dgrun's own.
    public var logDirectory: String?
    /// dgrun ci: send a `recorded` event per task (its graph version, declared-versus-used).
    public var reportRecords = false
    /// The output cache: --cache, --cache-url, --cache-read-only (and their environment variables).
    public var cache = CacheRequest()

    public init(command: [String] = []) { self.command = command }

    /// The keys that `environment` sets (for the environment digest of a task).
    public var environmentKeys: [String] { environment.map { String($0.prefix { $0 != "=" }) } }

    /// Adds KEY=VALUE, rejecting anything else.
    public mutating func setEnvironment(_ assignment: String) throws(DgrunError) {
        _ = try Self.key(of: assignment)
        environment.append(assignment)
    }

    /// The KEY of KEY=VALUE; an error for anything else.
    public static func key(of assignment: String) throws(DgrunError) -> Substring {
        guard let eq = assignment.firstIndex(of: "="), eq != assignment.startIndex else {
            throw DgrunError("--env \"\(assignment)\" must look like KEY=VALUE")
        }
        return assignment[..<eq]
    }

    /// This request with a task's task.toml under it: a value the caller gave wins; the task fills
    /// the rest. The one merge of flags and task.toml.
    public func applying(_ task: TaskFile) -> RunRequest {
        var merged = self
        merged.command = task.argv
        merged.workingDirectory = workingDirectory ?? task.workingDirectory
        merged.environment = task.env.map { "\($0.key)=\($0.value)" } + environment
        merged.limits.memoryBytes = limits.memoryBytes ?? task.memoryBytes
        merged.limits.cpus = limits.cpus ?? task.cpus
        merged.limits.pids = limits.pids ?? task.pids
        merged.timeoutSeconds = timeoutSeconds ?? task.timeoutSeconds
        merged.profile = profile ?? task.profile
        merged.network = network ?? task.network
        // Outputs may land anywhere in the task directory, not only in its workdir.
        if task.workdir != "." { merged.binds.append(Bind(source: task.directory, readonly: false)) }
        // Declared inputs under /tmp, which is private in the sandbox: shown read-only.
        for input in task.inputs {
            let absolute = TaskFile.absolute(input, in: task.directory)
            guard absolute.hasPrefix("/tmp/"), !absolute.hasPrefix(task.directory + "/") else { continue }
            var dir = String(absolute.prefix { !"*?[".contains($0) })
            dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.endIndex)])
            if FileIO.isDirectory(dir), !merged.binds.contains(where: { $0.source == dir }) {
                merged.binds.append(Bind(source: dir, readonly: true))
            }
        }
        return merged
    }
}

extension TaskFile {
    /// A declared path (relative to the task) made absolute and lexically normal; globs stay globs.
    public static func absolute(_ pattern: String, in directory: String) -> String {
        var parts: [Substring] = []
        for part in (pattern.hasPrefix("/") ? pattern : directory + "/" + pattern).split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }
}
