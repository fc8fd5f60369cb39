import DgrunMonitor
import DgrunSpec

/// Everything the launcher needs for one run, resolved by the provisioner from the request, the
/// profile and the defaults: host paths real, the seccomp program compiled, the environment final.
public struct SandboxSpec: Sendable {
    public typealias UserMapping = RunRequest.UserMapping

    public struct Bind: Sendable, Equatable {
        public var source: String
        public var target: String
        public var readonly: Bool
        public init(source: String, target: String, readonly: Bool) {
            self.source = source
            self.target = target
            self.readonly = readonly
        }
    }

    public var argv: [String]
    public var environment: [String]        // KEY=VALUE
    public var workingDirectory: String     // inside the sandbox
    public var network: SandboxProfile.Network = .host
    public var hostname: String = "dgrun"
    public var rootfs: String?
    public var binds: [Bind] = []
    public var tmpfs: [String] = ["/tmp"]
    /// Kernel files inside the sandbox made read-only, and masked, after every other mount (the
    /// profile's `readonly_paths` and `masked_paths`); missing ones are skipped.
    public var readonlyPaths: [String] = SandboxProfile.defaultReadonlyPaths
    public var maskedPaths: [String] = SandboxProfile.defaultMaskedPaths
    public var limits = ResourceLimits()
    public var limitMode: LimitMode = .enforce
    public var seccompProgram: [UInt8]?
    /// The profile's `user_namespaces: "deny"`: a second filter, stacked on `seccompProgram`.
    public var userNamespaceGuard: [UInt8]?
    public var keepCapabilities: UInt64 = 0
    public var timeoutSeconds: Double?
    /// After a timeout: SIGTERM, then SIGKILL of everything after this long.
    public var killGraceSeconds: Double = 10
    public var userMapping: UserMapping = .root
    /// --userns auto: the host ids the sandbox's 0... are, and the caller's own ids, which the
    /// bound directories' files (the caller's) appear as root inside through an idmapped mount.
    public var subordinateIDs: SubordinateIDs?
    public var newSession = false
    /// The command's stdout goes to dgrun's stderr (discover printing the graph on stdout).
    public var stdoutToStderr = false
    /// The command's stdout and stderr appended to this file instead of dgrun's own (dgrun ci).
    public var outputFile: String?
    /// discover: trace file, exec and network calls with a seccomp notify filter.
    public var trace = false
    /// After the command exits, let the processes it left behind run (and be traced) this long.
    public var lingerSeconds: Double = 0
    /// Live limit tuning: where the tuned limits start (below the ceilings in `limits`), and
    /// whether the monitor may move them. nil: no monitor.
    public var tuning: TuningPlan?

    public struct TuningPlan: Sendable, Equatable {
        /// memory.high on v2, the v1 hard limit (with its tasks paused, not killed, at it).
        public var memoryStart: UInt64?
        /// CPU quota in µs per 100 ms.
        public var cpuQuotaStart: UInt64?
        /// What past runs used over time, for the tuned memory limit to follow.
        public var memorySchedule = UsageSchedule()
        /// false: samples only, limits stay where they start.
        public var tune: Bool
        public init(memoryStart: UInt64? = nil, cpuQuotaStart: UInt64? = nil, tune: Bool = true) {
            self.memoryStart = memoryStart
            self.cpuQuotaStart = cpuQuotaStart
            self.tune = tune
        }
    }

    public init(argv: [String], environment: [String], workingDirectory: String) {
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
    }

    /// PATH from the environment the command gets, for resolving argv[0].
    public var searchPath: String {
        environment.first(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) }
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    }
}
